//! A [`LayerHost`] for machines without Windows: it writes the same tree as plain files and
//! records everything Windows would keep outside the file content — attributes, the four
//! FILETIMEs, security descriptors, EAs, reparse buffers, tombstones, links and the vmcompute
//! calls with their parent chains — in `manifest.json` in the layer folder.
//!
//! What lands on disk: staged files with their exact bytes (attribute header + backup stream);
//! for `BackupWrite` targets the unnamed data stream as the file content and each alternate data
//! stream as a sibling file `NAME:stream` (a name Windows can never have, so no clash).
//! `ImportLayer` moves the staged tree into the layer folder unchanged, since the real import is
//! a private vmcompute format; tests thus see every staged byte.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde::Serialize;

use crate::backup_stream::{copy_exact, BackupSink, StreamHeader, StreamId};
use crate::error::{Error, IoContext, Result};
use crate::fileinfo::FileBasicInfo;
use crate::filetime::FileTime;
use crate::host::{LayerHost, LayerKind, RestoreOptions, StagedKind};

/// Largest metadata stream (SD, EA, reparse) kept in the manifest; their Win32 length fields
/// make anything bigger malformed anyway.
const MAX_META_STREAM: u64 = 1 << 20;

/// The four times of a path.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Times {
    pub creation: FileTime,
    pub last_access: FileTime,
    pub last_write: FileTime,
    pub change: FileTime,
}

impl From<&FileBasicInfo> for Times {
    fn from(i: &FileBasicInfo) -> Self {
        Times {
            creation: i.creation_time,
            last_access: i.last_access_time,
            last_write: i.last_write_time,
            change: i.change_time,
        }
    }
}

/// One record of a restored backup stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StreamRecord {
    pub id: StreamId,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub size: u64,
    /// SECURITY / EA / REPARSE / LINK content, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// Where an alternate data stream's content was written (layer-relative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// True when BackupWrite would skip it (security without `process_security`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// What the manifest knows about one path.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct PathRecord {
    /// `dir`, `staged-file`, `dir-record`, `restored-file`, `restored-dir`, `hard-link`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<Times>,
    /// For staged files: how to read the bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<StagedKind>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamRecord>,
}

/// A tombstone applied after the import.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TombstoneRecord {
    pub path: String,
    pub found: bool,
}

/// A hard link that was made.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkRecord {
    pub name: String,
    pub target: String,
    pub target_root: PathBuf,
}

/// A call that only Windows can really make.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "call")]
pub enum CallRecord {
    ImportLayer {
        layer: PathBuf,
        import_folder: PathBuf,
        parents: Vec<PathBuf>,
        /// Folder base names handed to `NameToGuid` for the parents' layer ids.
        name_to_guid: Vec<String>,
    },
    ProcessBaseImage {
        layer: PathBuf,
    },
    ProcessUtilityImage {
        path: PathBuf,
    },
    RemoveAll {
        path: String,
    },
    DeleteTree {
        path: PathBuf,
    },
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Manifest {
    pub layer: PathBuf,
    /// `base` or `diff`.
    pub kind: String,
    pub parents: Vec<PathBuf>,
    pub paths: BTreeMap<String, PathRecord>,
    pub tombstones: Vec<TombstoneRecord>,
    pub links: Vec<LinkRecord>,
    pub calls: Vec<CallRecord>,
}

/// File name of the manifest inside the layer folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// See the module docs. One layer at a time: `begin_layer` .. `finish_layer`.
#[derive(Default, Clone)]
pub struct LinuxHost {
    current: Arc<Mutex<Option<Manifest>>>,
}

impl LinuxHost {
    /// A host with no layer open.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, Option<Manifest>> {
        // A poisoned lock only means another thread panicked mid-record; the data is still a
        // consistent map, so keep going rather than cascade the panic.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_manifest(&self, f: impl FnOnce(&mut Manifest)) {
        if let Some(m) = self.state().as_mut() {
            f(m);
        }
    }

    fn record_path(&self, rel: &str, f: impl FnOnce(&mut PathRecord)) {
        self.with_manifest(|m| f(m.paths.entry(rel.to_string()).or_default()));
    }
}

fn create_new(path: &Path, replace: bool) -> Result<File> {
    if replace {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("replacing", path, e)),
        }
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .ctx("creating", path)
}

impl LayerHost for LinuxHost {
    fn begin_layer(&self, layer: &Path, kind: &LayerKind) -> Result<()> {
        let (kind, parents) = match kind {
            LayerKind::Base => ("base", Vec::new()),
            LayerKind::Diff { parents, .. } => ("diff", parents.clone()),
        };
        *self.state() = Some(Manifest {
            layer: layer.to_path_buf(),
            kind: kind.into(),
            parents,
            paths: BTreeMap::new(),
            tombstones: Vec::new(),
            links: Vec::new(),
            calls: Vec::new(),
        });
        Ok(())
    }

    fn create_dir(&self, root: &Path, rel: &str) -> Result<()> {
        let path = root.join(rel);
        fs::create_dir(&path).ctx("creating directory", &path)?;
        self.record_path(rel, |r| r.kind = "dir".into());
        Ok(())
    }

    fn create_staged_file(
        &self,
        root: &Path,
        rel: &str,
        info: &FileBasicInfo,
        kind: StagedKind,
    ) -> Result<Box<dyn Write + Send>> {
        let path = root.join(rel);
        let file = create_new(&path, false)?;
        self.record_path(rel, |r| {
            r.kind = match kind {
                StagedKind::AttrHeaderBackupStream => "staged-file",
                StagedKind::DirRecord => "dir-record",
            }
            .into();
            r.attributes = Some(info.file_attributes);
            r.times = Some(info.into());
            r.content = Some(kind);
        });
        Ok(Box::new(file))
    }

    fn restore(
        &self,
        root: &Path,
        rel: &str,
        info: &FileBasicInfo,
        opts: RestoreOptions,
    ) -> Result<Box<dyn BackupSink>> {
        let path = root.join(rel);
        let file = if opts.is_dir {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::entry(rel, "a file is in the way of this directory"));
                }
                Err(_) => fs::create_dir(&path).ctx("creating directory", &path)?,
            }
            None
        } else {
            Some(BufWriter::with_capacity(
                64 * 1024,
                create_new(&path, opts.replace_existing)?,
            ))
        };
        self.record_path(rel, |r| {
            r.kind = if opts.is_dir {
                "restored-dir"
            } else {
                "restored-file"
            }
            .into();
            r.attributes = Some(info.file_attributes);
            r.times = Some(info.into());
            r.streams.clear();
        });
        Ok(Box::new(RestoreSink {
            host: self.clone(),
            root: root.to_path_buf(),
            rel: rel.to_string(),
            file,
            process_security: opts.process_security,
            replace: opts.replace_existing,
            records: Vec::new(),
        }))
    }

    fn set_basic_info(&self, root: &Path, rel: &str, info: &FileBasicInfo) -> Result<()> {
        let path = root.join(rel);
        fs::symlink_metadata(&path).ctx("setting times of", &path)?;
        self.record_path(rel, |r| {
            r.attributes = Some(info.file_attributes);
            r.times = Some(info.into());
        });
        Ok(())
    }

    fn hard_link(
        &self,
        target_root: &Path,
        target: &str,
        link_root: &Path,
        name: &str,
    ) -> Result<()> {
        let from = target_root.join(target);
        let to = link_root.join(name);
        match fs::remove_file(&to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("replacing", &to, e)),
        }
        fs::hard_link(&from, &to).map_err(|e| Error::Io {
            what: "hard-linking",
            path: PathBuf::from(format!("{} -> {}", to.display(), from.display())),
            source: e,
        })?;
        self.with_manifest(|m| {
            m.links.push(LinkRecord {
                name: name.into(),
                target: target.into(),
                target_root: target_root.to_path_buf(),
            });
            m.paths.insert(
                name.into(),
                PathRecord {
                    kind: "hard-link".into(),
                    ..Default::default()
                },
            );
        });
        Ok(())
    }

    fn remove_tombstone(&self, root: &Path, rel: &str) -> Result<bool> {
        let path = root.join(rel);
        let found = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&path).ctx("removing", &path)?;
                true
            }
            Ok(_) => {
                fs::remove_file(&path).ctx("removing", &path)?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("looking up", &path, e)),
        };
        self.with_manifest(|m| {
            m.tombstones.push(TombstoneRecord {
                path: rel.into(),
                found,
            })
        });
        Ok(found)
    }

    fn remove_all(&self, root: &Path, rel: &str) -> Result<()> {
        let path = root.join(rel);
        let meta = fs::symlink_metadata(&path).ctx("removing", &path)?;
        if meta.is_dir() {
            fs::remove_dir_all(&path).ctx("removing", &path)?;
        } else {
            fs::remove_file(&path).ctx("removing", &path)?;
        }
        self.with_manifest(|m| {
            m.paths.retain(|k, _| !crate::winpath::has_prefix(k, rel));
            m.calls.push(CallRecord::RemoveAll { path: rel.into() });
        });
        Ok(())
    }

    fn exists(&self, root: &Path, rel: &str) -> Result<bool> {
        let path = root.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("looking up", &path, e)),
        }
    }

    fn sddl_to_security_descriptor(&self, entry: &str, _sddl: &str) -> Result<Vec<u8>> {
        Err(Error::NeedsWindows(format!(
            "converting the SDDL security descriptor (MSWINDOWS.sd) of {entry:?}"
        )))
    }

    fn import_layer(&self, layer: &Path, staging: &Path, parents: &[PathBuf]) -> Result<()> {
        let listing = fs::read_dir(staging).ctx("listing", staging)?;
        let mut names = Vec::new();
        for item in listing {
            names.push(item.ctx("listing", staging)?.file_name());
        }
        names.sort();
        for name in names {
            let (from, to) = (staging.join(&name), layer.join(&name));
            fs::rename(&from, &to).ctx("moving staged entry into the layer", &from)?;
        }
        let name_to_guid = parents
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        self.with_manifest(|m| {
            m.calls.push(CallRecord::ImportLayer {
                layer: layer.to_path_buf(),
                import_folder: staging.to_path_buf(),
                parents: parents.to_vec(),
                name_to_guid,
            })
        });
        Ok(())
    }

    fn process_base_layer(&self, layer: &Path) -> Result<()> {
        self.with_manifest(|m| {
            m.calls.push(CallRecord::ProcessBaseImage {
                layer: layer.to_path_buf(),
            })
        });
        Ok(())
    }

    fn process_utility_vm(&self, uvm: &Path) -> Result<()> {
        fs::symlink_metadata(uvm).ctx("processing utility VM image", uvm)?;
        self.with_manifest(|m| {
            m.calls.push(CallRecord::ProcessUtilityImage {
                path: uvm.to_path_buf(),
            })
        });
        Ok(())
    }

    fn delete_tree(&self, path: &Path) -> Result<()> {
        match fs::remove_dir_all(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("deleting", path, e)),
        }
        self.with_manifest(|m| {
            m.calls.push(CallRecord::DeleteTree {
                path: path.to_path_buf(),
            })
        });
        Ok(())
    }

    fn finish_layer(&self, layer: &Path) -> Result<()> {
        let Some(manifest) = self.state().take() else {
            return Err(Error::Metadata {
                what: layer.display().to_string(),
                reason: "finish_layer without begin_layer".into(),
            });
        };
        let tmp = layer.join(".manifest.json.tmp");
        let dest = layer.join(MANIFEST_FILE);
        let mut out = BufWriter::new(File::create(&tmp).ctx("creating", &tmp)?);
        // Streamed out: a base layer has ~100k paths, no need for a second copy as one string.
        serde_json::to_writer_pretty(&mut out, &manifest).map_err(|e| Error::Metadata {
            what: tmp.display().to_string(),
            reason: e.to_string(),
        })?;
        let f = out
            .into_inner()
            .map_err(|e| Error::io("writing", &tmp, e.into_error()))?;
        f.sync_all().ctx("syncing", &tmp)?;
        fs::rename(&tmp, &dest).ctx("renaming into place", &dest)
    }
}

/// `BackupWrite` emulation: DATA becomes the file content, alternate data streams sibling
/// files, the rest manifest records.
struct RestoreSink {
    host: LinuxHost,
    root: PathBuf,
    rel: String,
    file: Option<BufWriter<File>>,
    process_security: bool,
    replace: bool,
    records: Vec<StreamRecord>,
}

impl BackupSink for RestoreSink {
    fn write_record(&mut self, header: &StreamHeader, data: &mut dyn Read) -> Result<()> {
        let path = self.root.join(&self.rel);
        let mut rec = StreamRecord {
            id: header.id,
            name: header.name.clone(),
            size: header.size,
            data_base64: None,
            file: None,
            skipped: false,
        };
        match header.id {
            StreamId::Data => {
                let Some(file) = self.file.as_mut() else {
                    return Err(Error::entry(
                        &self.rel,
                        "a directory cannot have a data stream",
                    ));
                };
                copy_exact(data, file, header.size, &path)?;
            }
            StreamId::AlternateData => {
                let stream = header
                    .name
                    .strip_prefix(':')
                    .and_then(|s| s.strip_suffix(":$DATA"))
                    .filter(|s| !s.is_empty() && !s.contains(['/', ':']))
                    .ok_or_else(|| {
                        Error::entry(&self.rel, format!("bad stream name {:?}", header.name))
                    })?;
                let rel = format!("{}:{stream}", self.rel);
                let side = self.root.join(&rel);
                let mut out = BufWriter::new(create_new(&side, self.replace)?);
                copy_exact(data, &mut out, header.size, &side)?;
                out.flush().ctx("flushing", &side)?;
                rec.file = Some(rel);
            }
            _ => {
                if header.size > MAX_META_STREAM {
                    return Err(Error::entry(
                        &self.rel,
                        format!(
                            "{:?} stream of {} bytes is implausibly large",
                            header.id, header.size
                        ),
                    ));
                }
                let mut buf = Vec::new();
                copy_exact(data, &mut buf, header.size, &path)?;
                rec.skipped = header.id == StreamId::Security && !self.process_security;
                rec.data_base64 = Some(base64::engine::general_purpose::STANDARD.encode(&buf));
            }
        }
        self.records.push(rec);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let RestoreSink {
            host,
            root,
            rel,
            file,
            records,
            ..
        } = *self;
        if let Some(mut f) = file {
            f.flush().ctx("flushing", root.join(&rel))?;
        }
        host.record_path(&rel, |r| r.streams = records);
        Ok(())
    }
}
