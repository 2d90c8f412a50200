//! The real [`LayerHost`]: Win32 file APIs with backup semantics and the Host Compute Service's
//! layer functions in vmcompute.dll (loaded at run time, as it is absent on client SKUs).
//!
//! Files are addressed through `\\?\` extended-length paths ([`crate::winpath::extended_path`]);
//! the process enables SeBackupPrivilege and SeRestorePrivilege once, which `BackupWrite` needs
//! to restore owners, SACLs and reparse points.

use std::ffi::c_void;
use std::fs::File;
use std::io::Write;
use std::os::windows::io::FromRawHandle;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use windows::core::{GUID, HRESULT, PCSTR, PCWSTR};
use windows::Win32::Foundation::{
    CloseHandle, GetLastError, LocalFree, ERROR_FILE_NOT_FOUND, ERROR_NOT_ALL_ASSIGNED,
    ERROR_PATH_NOT_FOUND, GENERIC_READ, GENERIC_WRITE, HANDLE, HLOCAL, LUID,
};
use windows::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows::Win32::Security::{
    AdjustTokenPrivileges, GetSecurityDescriptorLength, LookupPrivilegeValueW, LUID_AND_ATTRIBUTES,
    PSECURITY_DESCRIPTOR, SE_BACKUP_NAME, SE_PRIVILEGE_ENABLED, SE_RESTORE_NAME,
    TOKEN_ADJUST_PRIVILEGES, TOKEN_PRIVILEGES, TOKEN_QUERY,
};
use windows::Win32::Storage::FileSystem::{
    BackupWrite, CreateDirectoryW, CreateFileW, CreateHardLinkW, DeleteFileW, FileBasicInfo,
    GetFileAttributesW, SetFileInformationByHandle, CREATE_NEW, FILE_ATTRIBUTE_DIRECTORY,
    FILE_BASIC_INFO, FILE_FLAGS_AND_ATTRIBUTES, FILE_FLAG_BACKUP_SEMANTICS,
    FILE_FLAG_OPEN_REPARSE_POINT, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
    FILE_WRITE_ATTRIBUTES, INVALID_FILE_ATTRIBUTES, OPEN_EXISTING, WRITE_DAC, WRITE_OWNER,
};
use windows::Win32::System::LibraryLoader::{
    GetProcAddress, LoadLibraryExW, LOAD_LIBRARY_SEARCH_SYSTEM32,
};
use windows::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use crate::backup_stream::{BackupSink, FramedSink};
use crate::error::{Error, Result};
use crate::fileinfo::FileBasicInfo;
use crate::host::{LayerHost, LayerKind, RestoreOptions, StagedKind};
use crate::winpath::extended_path;

/// `ACCESS_SYSTEM_SECURITY`: needed to write SACLs through `BackupWrite`.
const ACCESS_SYSTEM_SECURITY: u32 = 0x0100_0000;

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn win32_err(call: &'static str, path: &Path, e: windows::core::Error) -> Error {
    Error::Win32 {
        call,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn hr_err(call: &'static str, path: &Path, hr: HRESULT) -> Error {
    Error::Win32 {
        call,
        path: path.to_path_buf(),
        reason: windows::core::Error::from_hresult(hr).to_string(),
    }
}

/// `root` + `rel` as a NUL-terminated `\\?\` wide path, plus the display path for errors.
fn ext(root: &Path, rel: &str) -> Result<(Vec<u16>, PathBuf)> {
    // `\\?\` turns off Win32 path normalisation, so the root must already be absolute.
    let root = std::path::absolute(root).map_err(|e| Error::io("resolving", root, e))?;
    let root_str = root.to_str().ok_or_else(|| Error::Metadata {
        what: root.display().to_string(),
        reason: "layer folder path is not valid Unicode".into(),
    })?;
    let full = extended_path(root_str, rel)?;
    let shown = PathBuf::from(&full);
    Ok((wide(&full), shown))
}

fn plain_wide(path: &Path) -> Result<Vec<u16>> {
    let path = std::path::absolute(path).map_err(|e| Error::io("resolving", path, e))?;
    let s = path.to_str().ok_or_else(|| Error::Metadata {
        what: path.display().to_string(),
        reason: "path is not valid Unicode".into(),
    })?;
    Ok(wide(s))
}

/// An owned Win32 handle, closed on drop.
struct OwnedHandle(HANDLE);

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful CreateFileW/OpenProcessToken and is
        // closed exactly once, here.
        unsafe {
            let _ = CloseHandle(self.0);
        }
    }
}

fn set_info(handle: HANDLE, info: &FileBasicInfo, shown: &Path) -> Result<()> {
    let fbi = FILE_BASIC_INFO {
        CreationTime: info.creation_time.0,
        LastAccessTime: info.last_access_time.0,
        LastWriteTime: info.last_write_time.0,
        ChangeTime: info.change_time.0,
        FileAttributes: info.file_attributes,
    };
    // SAFETY: `fbi` is a properly initialised FILE_BASIC_INFO living across the call and the
    // size passed is its size; the handle is open with write-attributes access.
    unsafe {
        SetFileInformationByHandle(
            handle,
            FileBasicInfo,
            &fbi as *const FILE_BASIC_INFO as *const c_void,
            std::mem::size_of::<FILE_BASIC_INFO>() as u32,
        )
    }
    .map_err(|e| win32_err("SetFileInformationByHandle", shown, e))
}

fn open(
    path: &[u16],
    shown: &Path,
    access: u32,
    disposition: windows::Win32::Storage::FileSystem::FILE_CREATION_DISPOSITION,
    flags: FILE_FLAGS_AND_ATTRIBUTES,
) -> Result<OwnedHandle> {
    // SAFETY: `path` is NUL-terminated and outlives the call; other pointers are None.
    let h = unsafe {
        CreateFileW(
            PCWSTR(path.as_ptr()),
            access,
            FILE_SHARE_READ,
            None,
            disposition,
            flags,
            None,
        )
    }
    .map_err(|e| win32_err("CreateFileW", shown, e))?;
    Ok(OwnedHandle(h))
}

/// Attributes of a path, `None` if it does not exist.
fn attributes(path: &[u16], shown: &Path) -> Result<Option<u32>> {
    // SAFETY: NUL-terminated path valid for the call.
    let a = unsafe { GetFileAttributesW(PCWSTR(path.as_ptr())) };
    if a != INVALID_FILE_ATTRIBUTES {
        return Ok(Some(a));
    }
    // SAFETY: reads the calling thread's last-error value.
    let err = unsafe { GetLastError() };
    if err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND {
        Ok(None)
    } else {
        Err(Error::Win32 {
            call: "GetFileAttributesW",
            path: shown.to_path_buf(),
            reason: windows::core::Error::from(err.to_hresult()).to_string(),
        })
    }
}

/// Why the host could not be set up. Cached (each step is tried once per process), hence
/// `Clone`; turned into an [`Error`] where a caller sees it.
#[derive(Clone, Debug, thiserror::Error)]
enum SetupError {
    #[error("{call}: {source}")]
    Call {
        call: &'static str,
        source: windows::core::Error,
    },
    #[error("the process does not hold {0} (run elevated)")]
    PrivilegeNotHeld(String),
    #[error("loading vmcompute.dll (is the Containers feature enabled?): {0}")]
    LoadVmcompute(#[source] windows::core::Error),
    #[error("vmcompute.dll has no {0}")]
    MissingExport(String),
}

fn enable_privileges() -> std::result::Result<(), SetupError> {
    let mut token = HANDLE::default();
    // SAFETY: GetCurrentProcess returns a pseudo-handle; `token` receives a real handle that
    // OwnedHandle closes.
    unsafe {
        OpenProcessToken(
            GetCurrentProcess(),
            TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY,
            &mut token,
        )
    }
    .map_err(|source| SetupError::Call {
        call: "OpenProcessToken",
        source,
    })?;
    let token = OwnedHandle(token);
    for name in [SE_BACKUP_NAME, SE_RESTORE_NAME] {
        let mut luid = LUID::default();
        // SAFETY: `name` is a static NUL-terminated wide string; `luid` is a valid out pointer.
        unsafe { LookupPrivilegeValueW(PCWSTR::null(), name, &mut luid) }.map_err(|source| {
            SetupError::Call {
                call: "LookupPrivilegeValueW",
                source,
            }
        })?;
        let tp = TOKEN_PRIVILEGES {
            PrivilegeCount: 1,
            Privileges: [LUID_AND_ATTRIBUTES {
                Luid: luid,
                Attributes: SE_PRIVILEGE_ENABLED,
            }],
        };
        // SAFETY: `tp` is a complete TOKEN_PRIVILEGES with one entry; no previous state wanted.
        unsafe { AdjustTokenPrivileges(token.0, false, Some(&tp), 0, None, None) }.map_err(
            |source| SetupError::Call {
                call: "AdjustTokenPrivileges",
                source,
            },
        )?;
        // SAFETY: reads the thread's last error, which AdjustTokenPrivileges sets on success.
        if unsafe { GetLastError() } == ERROR_NOT_ALL_ASSIGNED {
            // SAFETY: `name` is a valid NUL-terminated static string.
            let shown = unsafe { name.to_string() }.unwrap_or_default();
            return Err(SetupError::PrivilegeNotHeld(shown));
        }
    }
    Ok(())
}

#[repr(C)]
struct DriverInfo {
    /// 1 = the Windows filter driver.
    flavour: i32,
    home_dir: PCWSTR,
}

#[repr(C)]
struct WcLayerDescriptor {
    layer_id: GUID,
    flags: u32,
    path: PCWSTR,
}

type ImportLayerFn = unsafe extern "system" fn(
    *const DriverInfo,
    PCWSTR,
    PCWSTR,
    *const WcLayerDescriptor,
    u32,
) -> HRESULT;
type NameToGuidFn = unsafe extern "system" fn(PCWSTR, *mut GUID) -> HRESULT;
type PathFn = unsafe extern "system" fn(PCWSTR) -> HRESULT;

struct Vmcompute {
    import_layer: ImportLayerFn,
    name_to_guid: NameToGuidFn,
    process_base_image: PathFn,
    process_utility_image: PathFn,
}

fn vmcompute() -> Result<&'static Vmcompute> {
    static VMCOMPUTE: OnceLock<std::result::Result<Vmcompute, SetupError>> = OnceLock::new();
    VMCOMPUTE
        .get_or_init(|| {
            let dll = wide("vmcompute.dll");
            // SAFETY: NUL-terminated name; restricting the search to System32 avoids DLL
            // planting.
            let module =
                unsafe { LoadLibraryExW(PCWSTR(dll.as_ptr()), None, LOAD_LIBRARY_SEARCH_SYSTEM32) }
                    .map_err(SetupError::LoadVmcompute)?;
            let sym = |name: &'static [u8]| {
                // SAFETY: `name` is a NUL-terminated ASCII export name; the module stays
                // loaded for the life of the process (never freed).
                unsafe { GetProcAddress(module, PCSTR(name.as_ptr())) }.ok_or_else(|| {
                    SetupError::MissingExport(
                        String::from_utf8_lossy(&name[..name.len() - 1]).into_owned(),
                    )
                })
            };
            // SAFETY: each export has the stdcall signature declared by its fn type (the
            // documented HCS layer API: HRESULT-returning, wide-string arguments).
            unsafe {
                Ok(Vmcompute {
                    import_layer: std::mem::transmute::<
                        unsafe extern "system" fn() -> isize,
                        ImportLayerFn,
                    >(sym(b"ImportLayer\0")?),
                    name_to_guid: std::mem::transmute::<
                        unsafe extern "system" fn() -> isize,
                        NameToGuidFn,
                    >(sym(b"NameToGuid\0")?),
                    process_base_image: std::mem::transmute::<
                        unsafe extern "system" fn() -> isize,
                        PathFn,
                    >(sym(b"ProcessBaseImage\0")?),
                    process_utility_image: std::mem::transmute::<
                        unsafe extern "system" fn() -> isize,
                        PathFn,
                    >(sym(b"ProcessUtilityImage\0")?),
                })
            }
        })
        .as_ref()
        .map_err(|e| Error::NeedsWindows(e.to_string()))
}

/// The Windows host. Creating it enables the backup and restore privileges.
pub struct WindowsHost {
    _private: (),
}

impl WindowsHost {
    /// Enables SeBackupPrivilege and SeRestorePrivilege for the process (once).
    pub fn new() -> Result<Self> {
        static PRIVS: OnceLock<std::result::Result<(), SetupError>> = OnceLock::new();
        PRIVS
            .get_or_init(enable_privileges)
            .clone()
            .map_err(|e| Error::Win32 {
                call: "AdjustTokenPrivileges",
                path: PathBuf::new(),
                reason: e.to_string(),
            })?;
        Ok(WindowsHost { _private: () })
    }

    fn name_to_guid(&self, name: &str, shown: &Path) -> Result<GUID> {
        let vm = vmcompute()?;
        let w = wide(name);
        let mut g = GUID::zeroed();
        // SAFETY: NUL-terminated name and a valid out pointer for the GUID.
        let hr = unsafe { (vm.name_to_guid)(PCWSTR(w.as_ptr()), &mut g) };
        if hr.is_err() {
            return Err(hr_err("NameToGuid", shown, hr));
        }
        Ok(g)
    }
}

/// `BackupWrite` as a byte sink; the context is released (abort = true) on drop.
struct BackupWriter {
    file: File,
    context: *mut c_void,
    process_security: bool,
    shown: PathBuf,
}

impl Write for BackupWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::windows::io::AsRawHandle;
        let mut written = 0u32;
        let chunk = &buf[..buf.len().min(u32::MAX as usize)];
        // SAFETY: the handle is open for writing; `chunk` and `written` are valid for the call;
        // `context` is the per-file BackupWrite context, owned by this struct.
        unsafe {
            BackupWrite(
                HANDLE(self.file.as_raw_handle()),
                chunk,
                &mut written,
                false,
                self.process_security,
                &mut self.context,
            )
        }
        .map_err(|e| std::io::Error::other(format!("BackupWrite {}: {e}", self.shown.display())))?;
        Ok(written as usize)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for BackupWriter {
    fn drop(&mut self) {
        use std::os::windows::io::AsRawHandle;
        if !self.context.is_null() {
            let mut written = 0u32;
            // SAFETY: abort = true only frees the context BackupWrite allocated for this handle.
            unsafe {
                let _ = BackupWrite(
                    HANDLE(self.file.as_raw_handle()),
                    &[],
                    &mut written,
                    true,
                    self.process_security,
                    &mut self.context,
                );
            }
        }
    }
}

impl LayerHost for WindowsHost {
    fn begin_layer(&self, _layer: &Path, _kind: &LayerKind) -> Result<()> {
        Ok(())
    }

    fn create_dir(&self, root: &Path, rel: &str) -> Result<()> {
        let (p, shown) = ext(root, rel)?;
        // SAFETY: NUL-terminated path; default security.
        unsafe { CreateDirectoryW(PCWSTR(p.as_ptr()), None) }
            .map_err(|e| win32_err("CreateDirectoryW", &shown, e))
    }

    fn create_staged_file(
        &self,
        root: &Path,
        rel: &str,
        info: &FileBasicInfo,
        _kind: StagedKind,
    ) -> Result<Box<dyn Write + Send>> {
        let (p, shown) = ext(root, rel)?;
        let h = open(
            &p,
            &shown,
            GENERIC_READ.0 | GENERIC_WRITE.0,
            CREATE_NEW,
            FILE_FLAGS_AND_ATTRIBUTES(0),
        )?;
        set_info(h.0, info, &shown)?;
        let raw = h.0 .0;
        std::mem::forget(h);
        // SAFETY: ownership of the open handle moves into the File, which closes it.
        Ok(Box::new(unsafe { File::from_raw_handle(raw) }))
    }

    fn restore(
        &self,
        root: &Path,
        rel: &str,
        info: &FileBasicInfo,
        opts: RestoreOptions,
    ) -> Result<Box<dyn BackupSink>> {
        let (p, shown) = ext(root, rel)?;
        let access =
            GENERIC_READ.0 | GENERIC_WRITE.0 | WRITE_DAC.0 | WRITE_OWNER.0 | ACCESS_SYSTEM_SECURITY;
        let flags = FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT;
        let h = if opts.is_dir {
            match attributes(&p, &shown)? {
                Some(a) if a & FILE_ATTRIBUTE_DIRECTORY.0 != 0 => {}
                Some(_) => return Err(Error::entry(rel, "a file is in the way of this directory")),
                None => self.create_dir(root, rel)?,
            }
            open(&p, &shown, access, OPEN_EXISTING, flags)?
        } else {
            if opts.replace_existing && attributes(&p, &shown)?.is_some() {
                // SAFETY: NUL-terminated path.
                unsafe { DeleteFileW(PCWSTR(p.as_ptr())) }
                    .map_err(|e| win32_err("DeleteFileW", &shown, e))?;
            }
            open(&p, &shown, access, CREATE_NEW, flags)?
        };
        set_info(h.0, info, &shown)?;
        let raw = h.0 .0;
        std::mem::forget(h);
        // SAFETY: ownership of the open handle moves into the File, which closes it.
        let file = unsafe { File::from_raw_handle(raw) };
        let writer = BackupWriter {
            file,
            context: std::ptr::null_mut(),
            process_security: opts.process_security,
            shown: shown.clone(),
        };
        Ok(Box::new(FramedSink::new(
            std::io::BufWriter::with_capacity(64 * 1024, writer),
            shown,
        )))
    }

    fn set_basic_info(&self, root: &Path, rel: &str, info: &FileBasicInfo) -> Result<()> {
        let (p, shown) = ext(root, rel)?;
        // SAFETY: NUL-terminated path; other pointers None.
        let h = unsafe {
            CreateFileW(
                PCWSTR(p.as_ptr()),
                FILE_WRITE_ATTRIBUTES.0,
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                None,
                OPEN_EXISTING,
                FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT,
                None,
            )
        }
        .map_err(|e| win32_err("CreateFileW", &shown, e))?;
        let h = OwnedHandle(h);
        set_info(h.0, info, &shown)
    }

    fn hard_link(
        &self,
        target_root: &Path,
        target: &str,
        link_root: &Path,
        name: &str,
    ) -> Result<()> {
        let (existing, _) = ext(target_root, target)?;
        let (link, shown) = ext(link_root, name)?;
        if attributes(&link, &shown)?.is_some() {
            // SAFETY: NUL-terminated path.
            unsafe { DeleteFileW(PCWSTR(link.as_ptr())) }
                .map_err(|e| win32_err("DeleteFileW", &shown, e))?;
        }
        // SAFETY: both paths NUL-terminated; default security.
        unsafe { CreateHardLinkW(PCWSTR(link.as_ptr()), PCWSTR(existing.as_ptr()), None) }
            .map_err(|e| win32_err("CreateHardLinkW", &shown, e))
    }

    fn remove_tombstone(&self, root: &Path, rel: &str) -> Result<bool> {
        let (p, shown) = ext(root, rel)?;
        match attributes(&p, &shown)? {
            None => Ok(false),
            Some(a) if a & FILE_ATTRIBUTE_DIRECTORY.0 != 0 => {
                std::fs::remove_dir_all(&shown).map_err(|e| Error::io("removing", &shown, e))?;
                Ok(true)
            }
            Some(_) => {
                // SAFETY: NUL-terminated path.
                unsafe { DeleteFileW(PCWSTR(p.as_ptr())) }
                    .map_err(|e| win32_err("DeleteFileW", &shown, e))?;
                Ok(true)
            }
        }
    }

    fn remove_all(&self, root: &Path, rel: &str) -> Result<()> {
        let (p, shown) = ext(root, rel)?;
        match attributes(&p, &shown)? {
            None => Err(Error::io(
                "removing",
                &shown,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )),
            Some(a) if a & FILE_ATTRIBUTE_DIRECTORY.0 != 0 => {
                std::fs::remove_dir_all(&shown).map_err(|e| Error::io("removing", &shown, e))
            }
            Some(_) => std::fs::remove_file(&shown).map_err(|e| Error::io("removing", &shown, e)),
        }
    }

    fn exists(&self, root: &Path, rel: &str) -> Result<bool> {
        let (p, shown) = ext(root, rel)?;
        Ok(attributes(&p, &shown)?.is_some())
    }

    fn sddl_to_security_descriptor(&self, entry: &str, sddl: &str) -> Result<Vec<u8>> {
        let w = wide(sddl);
        let mut sd = PSECURITY_DESCRIPTOR::default();
        let mut len = 0u32;
        // SAFETY: NUL-terminated SDDL; `sd` receives a LocalAlloc'd descriptor freed below.
        unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                PCWSTR(w.as_ptr()),
                SDDL_REVISION_1,
                &mut sd,
                Some(&mut len),
            )
        }
        .map_err(|e| Error::entry(entry, format!("SDDL {sddl:?} is invalid: {e}")))?;
        // SAFETY: `sd` points to a valid self-relative descriptor of `len` bytes (or of
        // GetSecurityDescriptorLength bytes); it is copied, then freed exactly once.
        unsafe {
            let n = if len == 0 {
                GetSecurityDescriptorLength(sd)
            } else {
                len
            } as usize;
            let bytes = std::slice::from_raw_parts(sd.0 as *const u8, n).to_vec();
            let _ = LocalFree(Some(HLOCAL(sd.0)));
            Ok(bytes)
        }
    }

    fn import_layer(&self, layer: &Path, staging: &Path, parents: &[PathBuf]) -> Result<()> {
        let vm = vmcompute()?;
        let mut parent_paths = Vec::with_capacity(parents.len());
        let mut descriptors = Vec::with_capacity(parents.len());
        for p in parents {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Metadata {
                    what: p.display().to_string(),
                    reason: "parent layer folder has no Unicode name".into(),
                })?;
            let id = self.name_to_guid(name, p)?;
            parent_paths.push(plain_wide(p)?);
            descriptors.push(id);
        }
        let descs: Vec<WcLayerDescriptor> = descriptors
            .into_iter()
            .zip(&parent_paths)
            .map(|(id, path)| WcLayerDescriptor {
                layer_id: id,
                flags: 0,
                path: PCWSTR(path.as_ptr()),
            })
            .collect();
        let home = wide("");
        let info = DriverInfo {
            flavour: 1,
            home_dir: PCWSTR(home.as_ptr()),
        };
        let id = plain_wide(layer)?;
        let folder = plain_wide(staging)?;
        // SAFETY: every pointer (driver info, strings, descriptor array) lives until the call
        // returns; the count matches the array.
        let hr = unsafe {
            (vm.import_layer)(
                &info,
                PCWSTR(id.as_ptr()),
                PCWSTR(folder.as_ptr()),
                if descs.is_empty() {
                    std::ptr::null()
                } else {
                    descs.as_ptr()
                },
                descs.len() as u32,
            )
        };
        if hr.is_err() {
            return Err(hr_err("ImportLayer", layer, hr));
        }
        Ok(())
    }

    fn process_base_layer(&self, layer: &Path) -> Result<()> {
        let vm = vmcompute()?;
        let p = plain_wide(layer)?;
        // SAFETY: NUL-terminated path valid for the call.
        let hr = unsafe { (vm.process_base_image)(PCWSTR(p.as_ptr())) };
        if hr.is_err() {
            return Err(hr_err("ProcessBaseImage", layer, hr));
        }
        Ok(())
    }

    fn process_utility_vm(&self, uvm: &Path) -> Result<()> {
        let vm = vmcompute()?;
        let p = plain_wide(uvm)?;
        // SAFETY: NUL-terminated path valid for the call.
        let hr = unsafe { (vm.process_utility_image)(PCWSTR(p.as_ptr())) };
        if hr.is_err() {
            return Err(hr_err("ProcessUtilityImage", uvm, hr));
        }
        Ok(())
    }

    fn delete_tree(&self, path: &Path) -> Result<()> {
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting", path, e)),
        }
    }

    fn finish_layer(&self, _layer: &Path) -> Result<()> {
        Ok(())
    }
}
