//! The per-file metadata Windows keeps outside the data stream: `FILE_BASIC_INFO`.

use crate::filetime::FileTime;

/// `FILE_ATTRIBUTE_READONLY`.
pub const FILE_ATTRIBUTE_READONLY: u32 = 0x1;
/// `FILE_ATTRIBUTE_DIRECTORY`: the default attributes of a tar directory without `MSWINDOWS.fileattr`.
pub const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
/// `FILE_ATTRIBUTE_REPARSE_POINT`.
pub const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;

/// Mirror of Win32 `FILE_BASIC_INFO`: the four times and the attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FileBasicInfo {
    pub creation_time: FileTime,
    pub last_access_time: FileTime,
    pub last_write_time: FileTime,
    pub change_time: FileTime,
    pub file_attributes: u32,
}

impl FileBasicInfo {
    /// Whether the attributes say "directory".
    pub fn is_dir(&self) -> bool {
        self.file_attributes & FILE_ATTRIBUTE_DIRECTORY != 0
    }

    /// The same times with attributes cleared, as staged files get them: the real attributes
    /// travel in the staged file's 4-byte header instead.
    pub fn without_attributes(&self) -> FileBasicInfo {
        FileBasicInfo {
            file_attributes: 0,
            ..*self
        }
    }
}
