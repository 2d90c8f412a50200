//! The Win32 backup stream format (`WIN32_STREAM_ID` records), as `BackupWrite` consumes it.
//!
//! Each record is a 20-byte little-endian header — u32 stream id, u32 attributes, u64 size,
//! u32 name size in bytes — followed by the UTF-16LE name (no NUL) and `size` bytes of data.
//! Records follow each other without padding.

use std::io::{Read, Write};

use crate::error::{Error, IoContext, Result};

/// Stream ids of `WIN32_STREAM_ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamId {
    /// `BACKUP_DATA`: the unnamed data stream.
    Data = 1,
    /// `BACKUP_EA_DATA`: an EA buffer (see [`crate::ea`]).
    Ea = 2,
    /// `BACKUP_SECURITY_DATA`: a self-relative security descriptor.
    Security = 3,
    /// `BACKUP_ALTERNATE_DATA`: a named data stream.
    AlternateData = 4,
    /// `BACKUP_LINK`: hard link information.
    Link = 5,
    /// `BACKUP_REPARSE_DATA`: a reparse buffer (see [`crate::reparse`]).
    Reparse = 8,
    /// `BACKUP_SPARSE_BLOCK`.
    SparseBlock = 9,
}

impl StreamId {
    /// Maps a raw id back; `None` for ids we never produce or accept.
    pub fn from_u32(id: u32) -> Option<StreamId> {
        Some(match id {
            1 => StreamId::Data,
            2 => StreamId::Ea,
            3 => StreamId::Security,
            4 => StreamId::AlternateData,
            5 => StreamId::Link,
            8 => StreamId::Reparse,
            9 => StreamId::SparseBlock,
            _ => return None,
        })
    }
}

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub id: StreamId,
    pub size: u64,
    /// Stream name, e.g. `:Zone.Identifier:$DATA`; empty for unnamed streams.
    pub name: String,
}

/// Length of the fixed part of a record header.
pub const HEADER_LEN: usize = 20;

impl StreamHeader {
    /// A record without a name.
    pub fn unnamed(id: StreamId, size: u64) -> StreamHeader {
        StreamHeader {
            id,
            size,
            name: String::new(),
        }
    }

    /// Encodes the header and name: 20 bytes plus 2 per UTF-16 unit of the name.
    pub fn encode(&self) -> Vec<u8> {
        let name: Vec<u16> = self.name.encode_utf16().collect();
        let mut out = Vec::with_capacity(HEADER_LEN + name.len() * 2);
        out.extend_from_slice(&(self.id as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&((name.len() * 2) as u32).to_le_bytes());
        for unit in name {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out
    }
}

/// Somewhere a backup stream goes, one record at a time.
///
/// Records arrive with their data as a reader of exactly `header.size` bytes, so large data
/// streams are copied through, never held in memory.
pub trait BackupSink {
    /// Writes one record.
    fn write_record(&mut self, header: &StreamHeader, data: &mut dyn Read) -> Result<()>;
    /// Completes the stream (flush, close, release Win32 context).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A [`BackupSink`] that serialises records into bytes: the staged-file form, and what the
/// Windows host feeds to `BackupWrite`.
pub struct FramedSink<W: Write> {
    out: W,
    /// For error messages.
    path: std::path::PathBuf,
}

impl<W: Write> FramedSink<W> {
    /// Frames records into `out`; `path` names the destination in errors.
    pub fn new(out: W, path: impl Into<std::path::PathBuf>) -> Self {
        FramedSink {
            out,
            path: path.into(),
        }
    }

    /// Gives the writer back (after a final flush by the caller).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Copies exactly `size` bytes, failing if the source ends early.
pub(crate) fn copy_exact(
    data: &mut dyn Read,
    out: &mut dyn Write,
    size: u64,
    path: &std::path::Path,
) -> Result<()> {
    let copied = std::io::copy(&mut data.take(size), out).ctx("writing stream data to", path)?;
    if copied != size {
        return Err(Error::Tar(format!(
            "stream for {} ended after {copied} of {size} bytes",
            path.display()
        )));
    }
    Ok(())
}

impl<W: Write> BackupSink for FramedSink<W> {
    fn write_record(&mut self, header: &StreamHeader, data: &mut dyn Read) -> Result<()> {
        self.out
            .write_all(&header.encode())
            .ctx("writing backup stream header to", &self.path)?;
        copy_exact(data, &mut self.out, header.size, &self.path)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.out.flush().ctx("flushing", &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        // DATA, size 5, no name: 01000000 00000000 0500000000000000 00000000.
        assert_eq!(
            StreamHeader::unnamed(StreamId::Data, 5).encode(),
            [1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // ALTERNATE_DATA named ":s:$DATA" (8 UTF-16 units = 16 bytes), size 2.
        let h = StreamHeader {
            id: StreamId::AlternateData,
            size: 2,
            name: ":s:$DATA".into(),
        };
        let mut want = vec![4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0];
        for c in ":s:$DATA".bytes() {
            want.extend_from_slice(&[c, 0]);
        }
        assert_eq!(h.encode(), want);
    }

    #[test]
    fn framed_sink_rejects_short_data() {
        let mut sink = FramedSink::new(Vec::new(), "x");
        let err = sink
            .write_record(&StreamHeader::unnamed(StreamId::Data, 4), &mut &b"ab"[..])
            .unwrap_err();
        assert!(err.to_string().contains("2 of 4"), "{err}");
    }
}
