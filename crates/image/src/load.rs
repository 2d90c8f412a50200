//! `load -i PATH`: importing images from an OCI image layout directory, an OCI archive (a tar of
//! a layout, optionally gzip/zstd-compressed), or a `docker save` tar.
//!
//! Everything streams: blobs go straight from the archive into the content store through
//! [`ContentStore::write_blob_from`], which verifies the digest a layout names (or computes
//! the digest of a `docker save` file). Only small JSON documents are held in memory. The
//! whole load holds a GC lease so a concurrent `prune` cannot sweep blobs before the images
//! referencing them are recorded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::layer::{self, Compression};
use crate::reference::Reference;
use crate::registry::{DOCKER_MANIFEST_LIST as DOCKER_LIST, OCI_CONFIG, OCI_INDEX};
use crate::store::{io_err, ImageRecord, ImageStore, Manifest, Result, StoreError, OCI_MANIFEST};

/// Small JSON files of an archive are read into memory up to this size.
const MAX_JSON: u64 = 16 << 20;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Options for [`load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Repository for images a layout names only by tag (`org.opencontainers.image.ref.name`
    /// = `latest`); default: the layout directory's or archive's file name.
    pub repository: Option<String>,
    /// `os/arch[/variant]` to pick from multi-platform indexes; default: the host's.
    pub platform: Option<String>,
}

/// One image a load recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub names: Vec<Reference>,
    pub record: ImageRecord,
}

/// Imports every image in `path` (layout dir, OCI archive, or `docker save` tar); returns the
/// names recorded.
pub fn load(store: &ImageStore, path: &Path) -> Result<Vec<Reference>> {
    Ok(load_with(store, path, &LoadOptions::default())?
        .into_iter()
        .flat_map(|i| i.names)
        .collect())
}

/// [`load`] with options, returning each image recorded (named or not).
pub fn load_with(store: &ImageStore, path: &Path, opts: &LoadOptions) -> Result<Vec<LoadedImage>> {
    let _lease = store.lease()?;
    let meta = std::fs::metadata(path).map_err(io_err("open", path))?;
    let default_repo = opts
        .repository
        .clone()
        .unwrap_or_else(|| repo_from_path(path));
    let platform = match &opts.platform {
        Some(p) => Platform::parse(p).ok_or_else(|| StoreError::BadImage {
            what: "platform",
            digest: Digest::of_bytes(p.as_bytes()),
            detail: format!("{p:?} is not os/arch[/variant]"),
        })?,
        None => Platform::host(),
    };
    if meta.is_dir() {
        let index = read_layout_dir(path)?;
        let ctx = Ctx {
            store,
            source: path.to_path_buf(),
            default_repo,
            platform,
            layout_dir: Some(path.to_path_buf()),
        };
        return ctx.load_index(&index, None);
    }
    let files = read_archive(store.content(), path)?;
    let ctx = Ctx {
        store,
        source: path.to_path_buf(),
        default_repo,
        platform,
        layout_dir: None,
    };
    if let Some(index) = files.json.get("index.json") {
        let docker_tags = files
            .json
            .get("manifest.json")
            .map(|m| docker_manifest(m, path))
            .transpose()?;
        return ctx.load_index(index, docker_tags.as_deref());
    }
    if let Some(m) = files.json.get("manifest.json") {
        let entries = docker_manifest(m, path)?;
        return ctx.load_docker(&entries, &files);
    }
    Err(StoreError::BadImage {
        what: "archive",
        digest: Digest::of_bytes(path.as_os_str().as_encoded_bytes()),
        detail: format!(
            "{}: neither an OCI archive (no index.json) nor a docker save archive (no manifest.json)",
            path.display()
        ),
    })
}

/// What an image archive is expected to be, for errors about files that are not one.
const EXPECTED_ARCHIVE: &str = "expected a tar archive (optionally gzip or zstd compressed) holding an OCI image layout or a `docker save` image";

/// A file that cannot be read as an image archive. Names the file and what was expected, and
/// never quotes its content: the tar crate's messages quote header fields, which for a text
/// file (`load -i /etc/shadow`) are its first line.
fn not_an_archive(path: &Path, e: &io::Error) -> StoreError {
    let why = if e.raw_os_error().is_some() {
        // An OS error (EIO, EACCES, …) says nothing about the content.
        e.to_string()
    } else {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => "it ends in the middle of an entry".to_string(),
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other => {
                "its content is not in that format".to_string()
            }
            kind => format!("reading it failed ({kind})"),
        }
    };
    bad(
        path,
        format!("not a readable image archive: {why}; {EXPECTED_ARCHIVE}"),
    )
}

/// What is wrong with a JSON document of an archive, without quoting it: serde_json's messages
/// quote the offending value, which may be anything the file holds.
fn json_problem(document: &str, e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax | Category::Eof => "is not valid JSON".to_string(),
        Category::Data => {
            let msg = e.to_string();
            match msg.strip_prefix("missing field ") {
                // Our own field names (`Config`, `manifests`, …), not the file's content.
                Some(rest) => format!(
                    "lacks the field {}",
                    rest.split(" at line").next().unwrap_or(rest)
                ),
                None => "has a value of the wrong type or form".to_string(),
            }
        }
        Category::Io => "could not be read".to_string(),
    };
    format!(
        "{document} {what} (at line {} column {}); expected the JSON document of that name of an OCI image layout or `docker save` image",
        e.line(),
        e.column()
    )
}

fn bad(path: &Path, detail: String) -> StoreError {
    StoreError::BadImage {
        what: "load",
        digest: Digest::of_bytes(path.as_os_str().as_encoded_bytes()),
        detail: format!("{}: {detail}", path.display()),
    }
}

/// A name for tag-only references, from the file name: lowercase, invalid characters dropped.
fn repo_from_path(path: &Path) -> String {
    let stem = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .trim_end_matches(".gz")
        .trim_end_matches(".zst")
        .trim_end_matches(".tar");
    let cleaned: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if cleaned.is_empty() {
        "image".to_string()
    } else {
        cleaned
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('/');
        let os = it.next()?.to_string();
        let arch = it.next()?.to_string();
        let variant = it.next().map(str::to_string);
        if os.is_empty() || arch.is_empty() || it.next().is_some() {
            return None;
        }
        Some(Self { os, arch, variant })
    }

    fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    fn matches(&self, p: &IndexPlatform) -> bool {
        p.os == self.os
            && p.architecture == self.arch
            && match (&self.variant, &p.variant) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                _ => true,
            }
    }
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<IndexEntry>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<IndexPlatform>,
}

#[derive(Debug, Deserialize)]
struct IndexPlatform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// One entry of a `docker save` manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_manifest(bytes: &[u8], path: &Path) -> Result<Vec<DockerEntry>> {
    serde_json::from_slice(bytes).map_err(|e| bad(path, json_problem("manifest.json", &e)))
}

/// Checks a layout directory's marker and returns its index.json.
fn read_layout_dir(dir: &Path) -> Result<Vec<u8>> {
    let marker = dir.join("oci-layout");
    let layout = std::fs::read(&marker).map_err(|e| {
        bad(
            dir,
            format!("not an OCI image layout (reading oci-layout: {e})"),
        )
    })?;
    check_layout_version(&layout, dir)?;
    read_small(&dir.join("index.json"))
}

fn check_layout_version(bytes: &[u8], path: &Path) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(path, json_problem("oci-layout", &e)))?;
    match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(s) if s.starts_with("1.") => Ok(()),
        Some(_) => Err(bad(
            path,
            "oci-layout: unsupported imageLayoutVersion (expected 1.x)".to_string(),
        )),
        None => Err(bad(
            path,
            "oci-layout: no imageLayoutVersion (expected 1.x)".to_string(),
        )),
    }
}

fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

fn parse_index(bytes: &[u8], path: &Path) -> Result<Index> {
    serde_json::from_slice(bytes).map_err(|e| bad(path, json_problem("image index", &e)))
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let mut buf = Vec::new();
    f.take(MAX_JSON + 1)
        .read_to_end(&mut buf)
        .map_err(io_err("read", path))?;
    if buf.len() as u64 > MAX_JSON {
        return Err(bad(path, format!("larger than {MAX_JSON} bytes")));
    }
    Ok(buf)
}

/// What one pass over an archive collected.
struct ArchiveFiles {
    /// Small JSON documents by archive path (normalised, no leading `./`).
    json: HashMap<String, Vec<u8>>,
    /// Every other regular file, stored as a blob: archive path -> (digest, size).
    blobs: HashMap<String, (Digest, u64)>,
}

/// One streaming pass: blobs into the content store (verified against their names when under
/// `blobs/sha256/`), JSON documents into memory.
fn read_archive(cs: &ContentStore, path: &Path) -> Result<ArchiveFiles> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(io_err("read", path))?;
    let compression = Compression::detect(&head[..n]);
    let f = File::open(path).map_err(io_err("open", path))?;
    let reader = layer::decompress(BufReader::with_capacity(1 << 20, f), compression)
        .map_err(|e| not_an_archive(path, &e))?;
    let mut archive = tar::Archive::new(reader);
    let mut files = ArchiveFiles {
        json: HashMap::new(),
        blobs: HashMap::new(),
    };
    let mut aliases: Vec<(String, String)> = Vec::new();
    let unreadable = |e: io::Error| not_an_archive(path, &e);
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let name = entry
            .path()
            .map_err(unreadable)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            // docker save links a layer shared by two images to its first copy.
            if let Some(target) = entry.link_name().map_err(unreadable)? {
                let base = if kind.is_symlink() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(target)
                } else {
                    target.into_owned()
                };
                let resolved = crate::unpack::normalise(&base);
                aliases.push((name, resolved.to_string_lossy().into_owned()));
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let named_blob = name
            .strip_prefix("blobs/sha256/")
            .and_then(|hex| Digest::from_hex(hex).ok());
        let small_json = size <= MAX_JSON
            && (name.ends_with(".json") || name == "oci-layout" || name == "repositories");
        if small_json && named_blob.is_none() {
            let mut buf = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut buf).map_err(unreadable)?;
            if name.ends_with(".json") && name != "manifest.json" && name != "index.json" {
                // docker save (old format) configs: `<hex>.json`; keep them as blobs too.
                let d = cs.write_blob(&buf)?;
                files.blobs.insert(name.clone(), (d, size));
            }
            files.json.insert(name, buf);
            continue;
        }
        let digest = match &named_blob {
            Some(d) => cs.write_blob_from(&mut entry, Some((d, Some(size))))?,
            None => cs.write_blob_from(&mut entry, None)?,
        };
        files.blobs.insert(name, (digest, size));
    }
    for (alias, target) in aliases {
        if let Some(b) = files.blobs.get(&target).cloned() {
            files.blobs.insert(alias.clone(), b);
        }
        if let Some(j) = files.json.get(&target).cloned() {
            files.json.insert(alias, j);
        }
    }
    if let Some(l) = files.json.get("oci-layout") {
        check_layout_version(l, path)?;
    }
    Ok(files)
}

struct Ctx<'a> {
    store: &'a ImageStore,
    source: PathBuf,
    default_repo: String,
    platform: Platform,
    /// For a layout directory: where blobs are imported from on demand (only what the chosen
    /// platform needs). Archives are imported whole in one pass instead.
    layout_dir: Option<PathBuf>,
}

impl Ctx<'_> {
    /// Makes sure blob `digest` is in the content store, importing it (verified) from the
    /// layout directory.
    fn ensure(&self, digest: &Digest, size: Option<u64>, what: &str) -> Result<()> {
        let cs = self.store.content();
        if cs.contains(digest) {
            return Ok(());
        }
        let Some(dir) = &self.layout_dir else {
            return Err(bad(
                &self.source,
                format!("{what} blob {digest} is missing from the archive"),
            ));
        };
        let blob_path = dir.join("blobs/sha256").join(digest.hex());
        let mut f = File::open(&blob_path)
            .map_err(|e| bad(&self.source, format!("{what} blob {digest}: {e}")))?;
        cs.write_blob_from(&mut f, Some((digest, size)))?;
        Ok(())
    }

    /// Records the images an index.json names. `docker_tags` (docker ≥ 25 archives carry both
    /// formats) supplies names for images the index leaves unnamed.
    fn load_index(
        &self,
        index: &[u8],
        docker_tags: Option<&[DockerEntry]>,
    ) -> Result<Vec<LoadedImage>> {
        let cs = self.store.content();
        let index = parse_index(index, &self.source.join("index.json"))?;
        let mut out = Vec::new();
        for entry in &index.manifests {
            self.ensure(&entry.digest, Some(entry.size), "index entry")?;
            let manifest_digest = self.pick_manifest(&entry.digest, &entry.media_type)?;
            let manifest = Manifest::parse(&cs.read_blob(&manifest_digest)?, &manifest_digest)?;
            self.ensure(
                &manifest.config.digest,
                Some(manifest.config.size),
                "config",
            )?;
            for l in &manifest.layers {
                self.ensure(&l.digest, Some(l.size), "layer")?;
            }
            let mut names = Vec::new();
            if let Some(n) = entry.annotations.get(CONTAINERD_NAME) {
                names.push(self.parse_name(n)?);
            } else if let Some(n) = entry.annotations.get(REF_NAME) {
                names.push(self.parse_ref_name(n)?);
            } else if let Some(entries) = docker_tags {
                for e in entries {
                    if e.config
                        .trim_start_matches("blobs/sha256/")
                        .trim_end_matches(".json")
                        == manifest.config.digest.hex()
                    {
                        for t in e.repo_tags.iter().flatten() {
                            names.push(self.parse_name(t)?);
                        }
                    }
                }
            }
            let record =
                self.store
                    .record_image_names(&names, &manifest_digest, &manifest.config.digest)?;
            out.push(LoadedImage { names, record });
        }
        merge_duplicates(out)
    }

    /// For an index entry that is itself an index, the manifest for our platform.
    fn pick_manifest(&self, digest: &Digest, media_type: &str) -> Result<Digest> {
        if !is_index(media_type) {
            return Ok(digest.clone());
        }
        let cs = self.store.content();
        let bytes = cs.read_blob(digest)?;
        let nested = parse_index(&bytes, &self.source)?;
        for e in &nested.manifests {
            if e.platform
                .as_ref()
                .is_some_and(|p| self.platform.matches(p))
            {
                self.ensure(&e.digest, Some(e.size), "manifest")?;
                return self.pick_manifest(&e.digest, &e.media_type);
            }
        }
        Err(bad(
            &self.source,
            format!(
                "image index {digest} has no manifest for platform {}/{}",
                self.platform.os, self.platform.arch
            ),
        ))
    }

    fn parse_name(&self, n: &str) -> Result<Reference> {
        Ok(Reference::parse(n)?)
    }

    /// `org.opencontainers.image.ref.name` is either a full reference or just a tag.
    fn parse_ref_name(&self, n: &str) -> Result<Reference> {
        if n.contains('/') || n.contains(':') || n.contains('@') {
            return self.parse_name(n);
        }
        Ok(Reference::parse(&format!("{}:{n}", self.default_repo))?)
    }

    /// `docker save` (pre-OCI format): configs and layers by path; layers are usually plain
    /// tars. Builds an OCI manifest for each image.
    fn load_docker(
        &self,
        entries: &[DockerEntry],
        files: &ArchiveFiles,
    ) -> Result<Vec<LoadedImage>> {
        let cs = self.store.content();
        let mut out = Vec::new();
        for e in entries {
            let config_path = e.config.trim_start_matches("./");
            let (config_digest, config_size) =
                files.blobs.get(config_path).cloned().ok_or_else(|| {
                    bad(
                        &self.source,
                        format!("config {config_path} is missing from the archive"),
                    )
                })?;
            let config: serde_json::Value = serde_json::from_slice(&cs.read_blob(&config_digest)?)
                .map_err(|e| {
                    bad(
                        &self.source,
                        json_problem(&format!("image config {config_path}"), &e),
                    )
                })?;
            let diff_ids: Vec<String> = config
                .pointer("/rootfs/diff_ids")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            if diff_ids.len() != e.layers.len() {
                return Err(StoreError::BadImage {
                    what: "image config",
                    digest: config_digest,
                    detail: format!(
                        "rootfs.diff_ids lists {} layers but manifest.json has {}",
                        diff_ids.len(),
                        e.layers.len()
                    ),
                });
            }
            let mut layers = Vec::new();
            for (lpath, diff_id) in e.layers.iter().zip(&diff_ids) {
                let lpath = lpath.trim_start_matches("./");
                let (digest, size) = files.blobs.get(lpath).cloned().ok_or_else(|| {
                    bad(
                        &self.source,
                        format!("layer {lpath} is missing from the archive"),
                    )
                })?;
                let mut head = [0u8; 4];
                let n = cs
                    .open_blob(&digest)?
                    .read(&mut head)
                    .map_err(io_err("read", &cs.blob_path(&digest)))?;
                let compression = Compression::detect(&head[..n]);
                if compression == Compression::None && &digest.to_string() != diff_id {
                    // An uncompressed layer's digest is its DiffID: check it now.
                    return Err(StoreError::DiffIdMismatch {
                        layer: digest.clone(),
                        expected: Digest::parse(diff_id).map_err(|e| {
                            bad(&self.source, format!("config {config_digest}: {e}"))
                        })?,
                        actual: digest,
                    });
                }
                layers.push(json!({
                    "mediaType": compression.oci_media_type(),
                    "digest": digest.to_string(),
                    "size": size,
                }));
            }
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
                "layers": layers,
            }))
            .map_err(|source| StoreError::BadJson {
                what: "generated manifest",
                digest: config_digest.clone(),
                source,
            })?;
            let manifest_digest = cs.write_blob(&manifest)?;
            let names = e
                .repo_tags
                .iter()
                .flatten()
                .map(|t| self.parse_name(t))
                .collect::<Result<Vec<_>>>()?;
            let record = self
                .store
                .record_image_names(&names, &manifest_digest, &config_digest)?;
            out.push(LoadedImage { names, record });
        }
        merge_duplicates(out)
    }
}

/// An index may list one manifest under several names; report each image once.
fn merge_duplicates(images: Vec<LoadedImage>) -> Result<Vec<LoadedImage>> {
    let mut out: Vec<LoadedImage> = Vec::new();
    for img in images {
        match out
            .iter_mut()
            .find(|o| o.record.manifest_digest == img.record.manifest_digest)
        {
            Some(o) => {
                o.names.extend(img.names);
                o.record = img.record;
            }
            None => out.push(img),
        }
    }
    Ok(out)
}
