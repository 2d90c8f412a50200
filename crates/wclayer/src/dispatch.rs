//! Reads a layer tar entry by entry and routes each to a [`LayerWriter`]: whiteouts become
//! removals, hard links pending links, `path:stream` entries alternate data streams of the
//! entry before them, and everything else an "add" whose backup stream is built here.
//!
//! Streaming: entry data is copied from the tar reader into the destination as it arrives; the
//! only buffered data are security descriptors, EAs, reparse buffers (all small, bounded by
//! their 16-bit length fields) and the four BCD files kept as backups.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::backup_stream::{BackupSink, StreamHeader, StreamId};
use crate::error::{Error, Result};
use crate::fileinfo::FileBasicInfo;
use crate::host::{LayerHost, RestoreOptions};
use crate::pax::{self, SecurityDescriptor};
use crate::winpath::{clean_entry_name, parent};
use crate::{ea, reparse};

/// Prefix of whiteout (removal) entries.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Opaque-directory marker: ignored on diff layers, an error on base layers.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Utility VM boot configuration files that ProcessUtilityImage rewrites; their original form is
/// also kept in the layer folder under these names so the image can be re-processed.
pub const MUTATED_FILES: [(&str, &str); 4] = [
    ("UtilityVM/Files/EFI/Microsoft/Boot/BCD", "bcd.bak"),
    ("UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG", "bcd.log.bak"),
    (
        "UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG1",
        "bcd.log1.bak",
    ),
    (
        "UtilityVM/Files/EFI/Microsoft/Boot/BCD.LOG2",
        "bcd.log2.bak",
    ),
];

/// Largest BCD file we copy through memory for its backup (real ones are tens of KiB).
const MAX_MUTATED_FILE: u64 = 64 << 20;

/// The destination of one layer: the diff (staging) or base (in place) rules.
pub trait LayerWriter {
    /// The layer folder.
    fn layer_root(&self) -> &Path;
    /// Starts an entry; returns where its backup stream goes.
    fn add(&mut self, name: &str, info: &FileBasicInfo) -> Result<Box<dyn BackupSink>>;
    /// A hard link `name` → `target` (both layer-relative).
    fn add_link(&mut self, name: &str, target: &str) -> Result<()>;
    /// A whiteout of `name`; `entry` is the whiteout entry itself, for messages.
    fn remove(&mut self, name: &str, entry: &str) -> Result<()>;
    /// An opaque-directory marker `entry`.
    fn opaque(&mut self, entry: &str) -> Result<()>;
}

/// Collected PAX records of an entry.
fn pax_records<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| Error::entry(name, format!("reading PAX header: {e}")))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| Error::entry(name, format!("malformed PAX record: {e}")))?;
            let key = ext
                .key()
                .map_err(|_| Error::entry(name, "PAX record key is not UTF-8"))?;
            out.insert(key.to_string(), ext.value_bytes().to_vec());
        }
    }
    Ok(out)
}

/// The add currently open, kept so following `name:stream` entries can join it.
struct OpenAdd {
    name: String,
    sink: Box<dyn BackupSink>,
}

/// Converts a whole layer tar into `writer`. Stops at the tar end-of-archive marker; the caller
/// drains whatever follows (for hashing).
pub fn write_layer<R: Read>(
    tar_stream: R,
    writer: &mut dyn LayerWriter,
    host: &dyn LayerHost,
) -> Result<()> {
    let mut archive = tar::Archive::new(tar_stream);
    let entries = archive
        .entries()
        .map_err(|e| Error::Tar(format!("opening archive: {e}")))?;
    let mut open: Option<OpenAdd> = None;
    let mut last_name = String::from("(start of archive)");
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::Tar(format!("reading the entry after {last_name:?}: {e}")))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let name = clean_entry_name(&entry.path_bytes())?;
        last_name.clone_from(&name);
        let base = name.rsplit('/').next().unwrap_or(&name);

        if base.contains(':') {
            write_alternate_stream(&mut entry, &name, open.as_mut())?;
            continue;
        }
        if let Some(prev) = open.take() {
            prev.sink.finish()?;
        }

        if let Some(removed) = base.strip_prefix(WHITEOUT_PREFIX) {
            write_whiteout(writer, &name, base, removed)?;
            continue;
        }

        if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| Error::entry(&name, "hard link without a target"))?;
            let target = clean_entry_name(&target)?;
            writer.add_link(&name, &target)?;
            continue;
        }

        let sink = add_entry(&mut entry, &name, kind, writer, host)?;
        open = Some(OpenAdd { name, sink });
    }
    if let Some(prev) = open.take() {
        prev.sink.finish()?;
    }
    Ok(())
}

/// A whiteout entry: `.wh..wh..opq` marks its directory opaque, `.wh.NAME` removes `NAME`.
fn write_whiteout(
    writer: &mut dyn LayerWriter,
    name: &str,
    base: &str,
    removed: &str,
) -> Result<()> {
    if base == OPAQUE_WHITEOUT {
        writer.opaque(name)?;
    } else {
        let dir = parent(name);
        let target = if dir.is_empty() {
            removed.to_string()
        } else {
            format!("{dir}/{removed}")
        };
        if removed.is_empty() {
            return Err(Error::entry(name, "whiteout names nothing"));
        }
        writer.remove(&target, name)?;
    }
    Ok(())
}

/// A file, directory or symlink entry: opens its add in `writer` and writes its backup streams
/// (security descriptor, EAs, reparse point, data). Returns the sink, kept open for the
/// `name:stream` entries that may follow.
fn add_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    kind: tar::EntryType,
    writer: &mut dyn LayerWriter,
    host: &dyn LayerHost,
) -> Result<Box<dyn BackupSink>> {
    let is_file = kind.is_file() || kind.is_contiguous();
    let is_symlink = kind.is_symlink();
    let is_dir = kind.is_dir();
    if kind.is_gnu_sparse() {
        return Err(Error::entry(
            name,
            "GNU sparse entries are not supported in Windows layers",
        ));
    }
    if !(is_file || is_symlink || is_dir) {
        return Err(Error::entry(
            name,
            format!("entry type {kind:?} has no Windows equivalent"),
        ));
    }

    let records = pax_records(entry, name)?;
    let header = entry.header();
    let mtime = header
        .mtime()
        .map_err(|e| Error::entry(name, format!("bad mtime: {e}")))?;
    let (atime, ctime) = match header.as_gnu() {
        Some(g) => (
            g.atime().ok().filter(|t| *t != 0),
            g.ctime().ok().filter(|t| *t != 0),
        ),
        None => (None, None),
    };
    let meta = pax::read_meta(name, is_dir, (mtime, atime, ctime), &records)?;

    let mut sink = open_sink(writer, host, name, &meta)?;
    write_metadata_streams(sink.as_mut(), host, name, &meta)?;
    if is_symlink {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| Error::entry(name, "symbolic link without a target"))?;
        let target = std::str::from_utf8(&target)
            .map_err(|_| Error::entry(name, "link target is not UTF-8"))?
            .to_string();
        let bytes = reparse::encode(name, &target, meta.mountpoint)?;
        sink.write_record(
            &StreamHeader::unnamed(StreamId::Reparse, bytes.len() as u64),
            &mut &bytes[..],
        )?;
    }
    if is_file {
        let size = entry.size();
        sink.write_record(&StreamHeader::unnamed(StreamId::Data, size), entry)?;
    }
    Ok(sink)
}

/// The add's sink; for the boot files in [`MUTATED_FILES`] it also writes the backup copy.
fn open_sink(
    writer: &mut dyn LayerWriter,
    host: &dyn LayerHost,
    name: &str,
    meta: &pax::NtfsMeta,
) -> Result<Box<dyn BackupSink>> {
    let mut sink = writer.add(name, &meta.info)?;
    if let Some((_, bak)) = MUTATED_FILES.iter().find(|(n, _)| *n == name) {
        let backup = host.restore(
            writer.layer_root(),
            bak,
            &meta.info,
            RestoreOptions {
                is_dir: false,
                process_security: true,
                replace_existing: true,
            },
        )?;
        sink = Box::new(TeeSink {
            primary: sink,
            copy: backup,
            name: name.to_string(),
        });
    }
    Ok(sink)
}

/// The security descriptor and extended attributes of an add, from its PAX records.
fn write_metadata_streams(
    sink: &mut dyn BackupSink,
    host: &dyn LayerHost,
    name: &str,
    meta: &pax::NtfsMeta,
) -> Result<()> {
    if let Some(sd) = &meta.security_descriptor {
        let bytes = match sd {
            SecurityDescriptor::Raw(b) => b.clone(),
            SecurityDescriptor::Sddl(text) => host.sddl_to_security_descriptor(name, text)?,
        };
        sink.write_record(
            &StreamHeader::unnamed(StreamId::Security, bytes.len() as u64),
            &mut &bytes[..],
        )?;
    }
    if !meta.xattrs.is_empty() {
        let bytes = ea::encode(name, &meta.xattrs)?;
        sink.write_record(
            &StreamHeader::unnamed(StreamId::Ea, bytes.len() as u64),
            &mut &bytes[..],
        )?;
    }
    Ok(())
}

/// `NAME:stream` after `NAME`: an ALTERNATE_DATA record named `:stream:$DATA`.
fn write_alternate_stream<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    open: Option<&mut OpenAdd>,
) -> Result<()> {
    let Some(open) = open else {
        return Err(Error::entry(
            name,
            "alternate data stream does not follow the file it belongs to",
        ));
    };
    let Some(stream) = name
        .strip_prefix(open.name.as_str())
        .filter(|rest| rest.starts_with(':') && rest.len() > 1)
    else {
        return Err(Error::entry(
            name,
            format!(
                "alternate data stream does not belong to the entry before it ({:?})",
                open.name
            ),
        ));
    };
    let kind = entry.header().entry_type();
    if !(kind.is_file() || kind.is_contiguous()) {
        return Err(Error::entry(
            name,
            "alternate data stream entry is not a regular file",
        ));
    }
    let header = StreamHeader {
        id: StreamId::AlternateData,
        size: entry.size(),
        name: format!("{stream}:$DATA"),
    };
    open.sink.write_record(&header, entry)
}

/// Sends every record to two sinks; used to keep the BCD backups. Buffers one record at a time.
struct TeeSink {
    primary: Box<dyn BackupSink>,
    copy: Box<dyn BackupSink>,
    name: String,
}

impl BackupSink for TeeSink {
    fn write_record(&mut self, header: &StreamHeader, data: &mut dyn Read) -> Result<()> {
        if header.size > MAX_MUTATED_FILE {
            return Err(Error::entry(
                &self.name,
                format!(
                    "{} bytes is too large for a boot configuration file",
                    header.size
                ),
            ));
        }
        let mut buf = Vec::with_capacity(header.size as usize);
        let got = data
            .take(header.size)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("reading tar data of", PathBuf::from(&self.name), e))?;
        if got as u64 != header.size {
            return Err(Error::Tar(format!(
                "{}: data ended after {got} of {} bytes",
                self.name, header.size
            )));
        }
        self.primary.write_record(header, &mut &buf[..])?;
        self.copy.write_record(header, &mut &buf[..])
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let TeeSink { primary, copy, .. } = *self;
        primary.finish()?;
        copy.finish()
    }
}
