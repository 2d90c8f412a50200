//! Targets of the image crate: layer tars, references, manifests/indexes/configs.

use zlayer_image::registry::{parse_manifest, ManifestDocument, Platform, ACCEPTED_MANIFEST_TYPES};
use zlayer_image::store::{ImageConfiguration, Manifest};
use zlayer_image::unpack::{apply_layer, ApplyOptions, WhiteoutMode};
use zlayer_image::{Digest, Reference};

/// The layer unpacker: the first byte picks the mode (overlay or apply whiteouts, deferred
/// lower-layer work, owners kept), the rest is the tar. Limits are small so a fuzzed tar bomb
/// is caught quickly. After each run nothing may exist outside the target directory: the
/// target's sibling `outside` (which the archive's `..` and absolute paths aim at) stays empty.
pub fn unpack(data: &[u8]) {
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    // A fresh directory per input, removed when it drops (a static one would outlive the
    // process: statics are never dropped).
    let work = tempfile::Builder::new()
        .prefix("zlayer-fuzz-unpack-")
        .tempdir()
        .expect("creating a per-input directory");
    let target = work.path().join("rootfs");
    let outside = work.path().join("outside");
    std::fs::create_dir(&target).expect("creating the target");
    std::fs::create_dir(&outside).expect("creating the canary directory");
    let opts = ApplyOptions {
        whiteouts: if mode & 1 == 0 {
            WhiteoutMode::Overlay
        } else {
            WhiteoutMode::Apply
        },
        max_bytes: 1 << 20,
        max_entries: 4096,
        lower_dirs: Vec::new(),
        preserve_owner: mode & 2 != 0,
        sync: false,
        defer_lower: mode & 4 != 0,
        space: None,
    };
    let result = apply_layer(&target, tar, &opts);
    if let Err(e) = &result {
        let _ = e.to_string();
    }
    let escaped: Vec<_> = std::fs::read_dir(&outside)
        .expect("reading the canary directory")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(
        escaped.is_empty(),
        "the layer created {escaped:?} outside its target"
    );
    let siblings: Vec<_> = std::fs::read_dir(work.path())
        .expect("reading the per-input directory")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n != "rootfs" && n != "outside")
        .collect();
    assert!(
        siblings.is_empty(),
        "the layer created {siblings:?} next to its target"
    );
    // Make everything removable again (an archive may leave 0000 directories; root ignores
    // modes, but not the immutable flags a layer cannot set anyway).
    drop(work);
}

/// Image references: parsing, and the forms the agent prints and parses back.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = Reference::parse(text) else {
        return;
    };
    // The canonical form is what the image index stores and reads back.
    let canonical = r.to_string();
    let again = Reference::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {text:?} does not parse: {e}"));
    assert_eq!(again, r, "canonical form {canonical:?} of {text:?}");
    // The short form `images` prints must name the same image.
    let familiar = r.familiar();
    let from_familiar = Reference::parse(&familiar)
        .unwrap_or_else(|e| panic!("familiar form {familiar:?} of {text:?} does not parse: {e}"));
    assert_eq!(from_familiar, r, "familiar form {familiar:?} of {text:?}");
    let _ = (r.name(), r.tag_or_digest(), r.is_loopback_registry());
}

/// Manifests, indexes and image configs as a registry or an archive serves them. The first
/// byte picks the document kind and the `Content-Type` the registry claimed.
pub fn manifest(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let content_type = ACCEPTED_MANIFEST_TYPES
                .get(usize::from(kind / 3) % (ACCEPTED_MANIFEST_TYPES.len() + 1))
                .copied();
            match parse_manifest(body, content_type) {
                Ok(ManifestDocument::Index(index)) => {
                    let want = Platform::host();
                    for entry in &index.manifests {
                        if let Some(p) = &entry.platform {
                            let _ = want.matches(p);
                            let printed = p.to_string();
                            let _ = Platform::parse(&printed);
                        }
                    }
                    round_trip(&index);
                }
                Ok(ManifestDocument::Image(m)) => round_trip(&m),
                Err(e) => {
                    let _ = e.to_string().len();
                }
            }
        }
        1 => {
            // The content store's own reading of a stored manifest.
            let _ = Manifest::parse(body, &Digest::of_bytes(body)).map_err(|e| e.to_string());
        }
        _ => {
            let Ok(config) = serde_json::from_slice::<ImageConfiguration>(body) else {
                return;
            };
            for id in config.rootfs().diff_ids() {
                let _ = Digest::parse(id).map_err(|e| e.to_string());
            }
            let _ = serde_json::to_vec(&config);
        }
    }
}

/// A parsed document serialises, and what it serialises to parses to the same document
/// (`load` and the content store write documents the agent later reads back).
fn round_trip<T>(doc: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(doc).expect("a parsed document serialises");
    let back: T = serde_json::from_slice(&json).expect("a serialised document parses");
    assert_eq!(&back, doc, "document JSON round trip");
}
