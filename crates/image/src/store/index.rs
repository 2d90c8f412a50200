//! The image index: which names point at which image, in the database. Recording (and
//! re-tagging), resolving a name, id or digest the way docker does, listing, and untagging.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::OCI_MANIFEST;
use super::{ImageRecord, ImageStore, ImageSummary, RemoveReport, Result, StoreError};
use crate::digest::Digest;
use crate::reference::Reference;

type ImageRow = (
    String,
    String,
    String,
    u64,
    Option<String>,
    String,
    String,
    Option<String>,
);

impl ImageStore {
    /// Records (or re-tags) an image whose manifest and config are in the content store, and
    /// points `name` at it. Returns the record.
    pub fn record_image(
        &self,
        name: &Reference,
        manifest_digest: &Digest,
        config_digest: &Digest,
    ) -> Result<ImageRecord> {
        self.record_image_names(std::slice::from_ref(name), manifest_digest, config_digest)
    }

    /// Like [`record_image`](Self::record_image) with any number of names (none: dangling).
    pub fn record_image_names(
        &self,
        names: &[Reference],
        manifest_digest: &Digest,
        config_digest: &Digest,
    ) -> Result<ImageRecord> {
        let manifest = self.manifest(manifest_digest)?;
        if &manifest.config.digest != config_digest {
            return Err(StoreError::BadImage {
                what: "manifest",
                digest: manifest_digest.clone(),
                detail: format!(
                    "its config is {}, not {config_digest}",
                    manifest.config.digest
                ),
            });
        }
        let config = self.read_config(config_digest)?;
        self.diff_ids(&config, &manifest, config_digest)?;
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_MANIFEST.to_string());
        let mut conn = self.db.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db.err(e))?;
        tx.execute(
            "INSERT INTO images (manifest_digest, config_digest, media_type, size, created, os, architecture, variant, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(manifest_digest) DO UPDATE SET recorded_at = excluded.recorded_at",
            params![
                manifest_digest.to_string(),
                config_digest.to_string(),
                media_type,
                size,
                config.created().clone(),
                config.os().to_string(),
                config.architecture().to_string(),
                config.variant().clone(),
                chrono::Utc::now().to_rfc3339(),
            ],
        )
        .map_err(|e| self.db.err(e))?;
        let mut displaced = Vec::new();
        for name in names {
            for key in name_keys(name) {
                let old: Option<String> = tx
                    .query_row(
                        "SELECT manifest_digest FROM image_names WHERE name = ?1",
                        [&key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| self.db.err(e))?;
                if let Some(old) = old.filter(|o| o != &manifest_digest.to_string()) {
                    displaced.push(old);
                }
                tx.execute(
                    "INSERT INTO image_names (name, manifest_digest) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET manifest_digest = excluded.manifest_digest",
                    params![key, manifest_digest.to_string()],
                )
                .map_err(|e| self.db.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.db.err(e))?;
        drop(conn);
        if !displaced.is_empty() {
            tracing::info!(?displaced, "re-tagged: previous images may now be dangling");
        }
        self.record_by_manifest(manifest_digest)?
            .ok_or_else(|| StoreError::NotFound(manifest_digest.to_string()))
    }

    fn rows(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<ImageRow>> {
        let conn = self.db.lock();
        let mut st = conn.prepare(sql).map_err(|e| self.db.err(e))?;
        let rows = st
            .query_map(args, |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .map_err(|e| self.db.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db.err(e))?;
        Ok(rows)
    }

    fn names_of(&self, manifest_digest: &str) -> Result<Vec<String>> {
        let conn = self.db.lock();
        let mut st = conn
            .prepare("SELECT name FROM image_names WHERE manifest_digest = ?1 ORDER BY name")
            .map_err(|e| self.db.err(e))?;
        let names = st
            .query_map([manifest_digest], |r| r.get(0))
            .map_err(|e| self.db.err(e))?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.db.err(e))?;
        Ok(names)
    }

    fn to_record(&self, row: ImageRow) -> Result<ImageRecord> {
        let (manifest, config, media_type, size, created, os, architecture, variant) = row;
        let parse = |s: &str| {
            Digest::parse(s).map_err(|e| StoreError::BadImage {
                what: "image record",
                digest: Digest::of_bytes(s.as_bytes()),
                detail: e.to_string(),
            })
        };
        Ok(ImageRecord {
            names: self.names_of(&manifest)?,
            manifest_digest: parse(&manifest)?,
            config_digest: parse(&config)?,
            media_type,
            size,
            created,
            os,
            architecture,
            variant,
        })
    }

    const SELECT: &'static str = "SELECT manifest_digest, config_digest, media_type, size, created, os, architecture, variant FROM images";

    fn record_by_manifest(&self, digest: &Digest) -> Result<Option<ImageRecord>> {
        let sql = format!("{} WHERE manifest_digest = ?1", Self::SELECT);
        let d = digest.to_string();
        let rows = self.rows(&sql, &[&d])?;
        rows.into_iter()
            .next()
            .map(|r| self.to_record(r))
            .transpose()
    }

    /// Every image record, newest first.
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        let sql = format!("{} ORDER BY recorded_at DESC", Self::SELECT);
        self.rows(&sql, &[])?
            .into_iter()
            .map(|r| self.to_record(r))
            .collect()
    }

    /// `images`.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        Ok(self
            .records()?
            .into_iter()
            .map(|r| ImageSummary {
                names: r.names,
                id: r.config_digest,
                manifest_digest: r.manifest_digest,
                created: r.created,
                size: r.size,
            })
            .collect())
    }

    /// Finds an image by name (normalised like docker: `busybox` is
    /// `docker.io/library/busybox:latest`), by `name@digest`, by full manifest or config digest,
    /// or by a prefix of its id (config digest hex) as docker accepts.
    pub fn resolve(&self, query: &str) -> Result<ImageRecord> {
        let q = query.trim();
        if let Ok(d) = Digest::parse(q) {
            let sql = format!(
                "{} WHERE manifest_digest = ?1 OR config_digest = ?1",
                Self::SELECT
            );
            let ds = d.to_string();
            if let Some(r) = self.rows(&sql, &[&ds])?.into_iter().next() {
                return self.to_record(r);
            }
            return Err(StoreError::NotFound(query.to_string()));
        }
        let parsed = Reference::parse(q);
        if let Ok(r) = &parsed {
            // With a digest the tag is only decoration (as in docker): never resolve by it.
            let keys = match r.digest() {
                Some(_) => name_keys(r).into_iter().take(1).collect(),
                None => name_keys(r),
            };
            for key in keys {
                let found: Option<String> = {
                    let conn = self.db.lock();
                    conn.query_row(
                        "SELECT manifest_digest FROM image_names WHERE name = ?1",
                        [&key],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(|e| self.db.err(e))?
                };
                if let Some(m) = found {
                    let d = Digest::parse(&m).map_err(|e| StoreError::BadImage {
                        what: "image name",
                        digest: Digest::of_bytes(key.as_bytes()),
                        detail: e.to_string(),
                    })?;
                    if let Some(rec) = self.record_by_manifest(&d)? {
                        return Ok(rec);
                    }
                }
            }
            if let Some(d) = r.digest() {
                if let Some(rec) = self.record_by_manifest(d)? {
                    return Ok(rec);
                }
                return Err(StoreError::NotFound(query.to_string()));
            }
        }
        let hex = q.strip_prefix("sha256:").unwrap_or(q);
        let is_prefix = !hex.is_empty()
            && hex.len() <= 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if is_prefix {
            let pattern = format!("sha256:{hex}%");
            let sql = format!(
                "{} WHERE config_digest LIKE ?1 OR manifest_digest LIKE ?1",
                Self::SELECT
            );
            let rows = self.rows(&sql, &[&pattern])?;
            let mut ids: Vec<&String> = rows.iter().map(|r| &r.1).collect();
            ids.sort();
            ids.dedup();
            match ids.len() {
                0 => {}
                1 => {
                    let row = rows.into_iter().next().expect("one id, at least one row");
                    return self.to_record(row);
                }
                _ => {
                    return Err(StoreError::Ambiguous {
                        query: query.to_string(),
                        matches: ids
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
        match parsed {
            Err(e) if !is_prefix => Err(e.into()),
            _ => Err(StoreError::NotFound(query.to_string())),
        }
    }

    /// Removes a name (`rmi`); the image record goes when its last name does, unless
    /// `in_use(&record)` says a container uses it. By id or digest, all names go at once.
    /// Blobs and snapshots are reclaimed by [`prune`](Self::prune).
    pub fn remove(
        &self,
        query: &str,
        in_use: impl Fn(&ImageRecord) -> bool,
    ) -> Result<RemoveReport> {
        let rec = self.resolve(query)?;
        let by_name: Option<Vec<String>> = Reference::parse(query.trim())
            .ok()
            .map(|r| name_keys(&r))
            .filter(|keys| keys.iter().any(|k| rec.names.contains(k)));
        let untag: Vec<String> = match &by_name {
            Some(keys) => keys
                .iter()
                .filter(|k| rec.names.contains(k))
                .cloned()
                .collect(),
            None => rec.names.clone(),
        };
        let last = untag.len() == rec.names.len();
        if last && in_use(&rec) {
            return Err(StoreError::InUse {
                image: rec.display_name(),
            });
        }
        let mut conn = self.db.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db.err(e))?;
        for n in &untag {
            tx.execute("DELETE FROM image_names WHERE name = ?1", [n])
                .map_err(|e| self.db.err(e))?;
        }
        let mut report = RemoveReport {
            untagged: untag,
            deleted: None,
        };
        if last {
            tx.execute(
                "DELETE FROM images WHERE manifest_digest = ?1",
                [rec.manifest_digest.to_string()],
            )
            .map_err(|e| self.db.err(e))?;
            report.deleted = Some(rec.manifest_digest.clone());
        }
        tx.commit().map_err(|e| self.db.err(e))?;
        Ok(report)
    }
}

/// The index keys of a reference: its tag form and/or its digest form.
/// The digest form comes first: for `repo:tag@digest` the digest decides, as docker does.
fn name_keys(r: &Reference) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(d) = r.digest() {
        keys.push(format!("{}@{d}", r.name()));
    }
    if let Some(t) = r.tag() {
        keys.push(format!("{}:{t}", r.name()));
    }
    keys
}
