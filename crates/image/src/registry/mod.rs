//! The registry client: resolves a reference to a platform-specific manifest and streams blobs.
//! The HTTP side (token dance, Range requests, bounded reads and timeouts) is in [`http`].

mod auth;
mod blob_reader;
mod error;
mod http;
mod manifest;
mod platform;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RANGE};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

pub use auth::{
    default_docker_config_path, load_docker_config, normalize_registry_host, Credentials,
    DockerConfigError,
};
pub use blob_reader::BlobReader;
pub use error::{RegistryError, RegistryErrorKind, RetryBudget};
use http::{Endpoint, Timeouts};
pub use http::{HttpError, MAX_ERROR_BODY, MAX_TOKEN_RESPONSE};
pub use manifest::{
    parse_manifest, Descriptor, ImageIndex, ImageManifest, IndexEntry, ManifestDocument,
    ManifestError, ACCEPTED_MANIFEST_TYPES, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
pub use platform::Platform;

use crate::digest::Digest;
use crate::reference::Reference;

/// Default number of blobs downloaded at once, as docker does.
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 3;
/// Default number of retries of a failed request (5xx, dropped connection) before giving up.
pub const DEFAULT_RETRIES: u32 = 5;
/// Manifests and indexes larger than this are refused (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Default for [`RegistryConfig::progress_timeout_secs`].
pub const DEFAULT_PROGRESS_TIMEOUT_SECS: u64 = 30;
/// Default for [`RegistryConfig::document_timeout_secs`].
pub const DEFAULT_DOCUMENT_TIMEOUT_SECS: u64 = 60;
/// Default for [`RegistryConfig::retry_budget_secs`].
pub const DEFAULT_RETRY_BUDGET_SECS: u64 = 120;

/// The daemon's registry settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Registries (`host[:port]`) reached over plain HTTP although not on loopback.
    pub insecure: Vec<String>,
    /// Pull-through mirrors per registry host (`"docker.io": ["mirror.local:5000"]`), tried
    /// in order before the registry itself.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Credentials per registry host; they win over `~/.docker/config.json`.
    pub auths: HashMap<String, Credentials>,
    /// Docker config file to read credentials from; `None` means the default
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Skip reading any docker config file (tests, or daemons that must not use a user's login).
    pub ignore_docker_config: bool,
    pub max_concurrent_downloads: usize,
    /// Failed attempts in a row (without any progress in between) before giving up.
    pub retries: u32,
    /// First retry delay; doubled on each further attempt (capped at 8 s).
    pub retry_base_delay_ms: u64,
    /// A request waiting this long for response headers, or a body this long without a byte,
    /// has stalled: the attempt fails (and is retried / resumed).
    pub progress_timeout_secs: u64,
    /// Time allowed for a whole small document (manifest, index, config, token response,
    /// error body) to arrive.
    pub document_timeout_secs: u64,
    /// Total time one request or blob download may lose to failed attempts (time without
    /// progress plus backoff) before it gives up, however many retries are left.
    pub retry_budget_secs: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            mirrors: HashMap::new(),
            auths: HashMap::new(),
            docker_config: None,
            ignore_docker_config: false,
            max_concurrent_downloads: DEFAULT_MAX_CONCURRENT_DOWNLOADS,
            retries: DEFAULT_RETRIES,
            retry_base_delay_ms: 200,
            progress_timeout_secs: DEFAULT_PROGRESS_TIMEOUT_SECS,
            document_timeout_secs: DEFAULT_DOCUMENT_TIMEOUT_SECS,
            retry_budget_secs: DEFAULT_RETRY_BUDGET_SECS,
        }
    }
}

impl RegistryConfig {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            progress: Duration::from_secs(self.progress_timeout_secs.max(1)),
            document: Duration::from_secs(self.document_timeout_secs.max(1)),
        }
    }

    /// [`Self::retry_budget_secs`] as a duration.
    pub fn retry_budget(&self) -> Duration {
        Duration::from_secs(self.retry_budget_secs)
    }
}

/// A reference resolved for one platform: the manifest and what it points to.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The reference as asked for.
    pub reference: Reference,
    /// Digest of the platform-specific image manifest (the image's id for pulling by digest).
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// The manifest exactly as served, to store byte for byte (its digest is `manifest_digest`).
    pub manifest_bytes: Bytes,
    /// When the reference named an index / manifest list: its digest and bytes.
    pub index: Option<(Digest, Bytes)>,
    /// The platform of the chosen index entry (None when there was no index).
    pub platform: Option<Platform>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A blob body being received. `start` is where it begins in the blob: the asked offset when
/// the registry honoured the Range request, 0 when it sent the whole blob instead.
pub struct BlobStream {
    pub start: u64,
    /// Bytes this response will carry, when the registry said so.
    pub len: Option<u64>,
    /// Where the body comes from (after redirects), for errors.
    pub url: String,
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
}

impl BlobStream {
    /// Refuses, before a byte is read, a body whose `Content-Length` says it reaches past
    /// `size` (the blob's size in its manifest).
    pub fn check_declared_size(
        &self,
        reference: &Reference,
        size: u64,
    ) -> Result<(), RegistryError> {
        match self.len {
            Some(len) if self.start.saturating_add(len) > size => Err(RegistryError::Http {
                reference: reference.to_string(),
                registry: reference.registry().to_string(),
                source: Box::new(HttpError::DeclaredTooLarge {
                    url: self.url.clone(),
                    what: "blob",
                    declared: self.start.saturating_add(len),
                    limit: size,
                }),
            }),
            _ => Ok(()),
        }
    }
}

/// A registry client shared by all pulls of a daemon. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    /// Daemon config auths merged over docker config auths, by normalised host.
    credentials: HashMap<String, Credentials>,
    /// One endpoint per registry host: the plain-HTTP decision is per host, and each keeps
    /// its own token cache and connection pool.
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    /// Registry host -> the endpoint (a mirror or itself) that last resolved a manifest, so
    /// blobs come from where the manifest came from.
    active: Mutex<HashMap<String, String>>,
}

impl RegistryClient {
    /// Builds a client, reading docker config credentials once (unless told not to).
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let mut credentials = HashMap::new();
        if !config.ignore_docker_config {
            let path = config
                .docker_config
                .clone()
                .or_else(default_docker_config_path);
            if let Some(path) = path {
                credentials.extend(load_docker_config(&path)?);
            }
        }
        for (host, c) in &config.auths {
            credentials.insert(normalize_registry_host(host), c.clone());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                credentials,
                endpoints: Mutex::new(HashMap::new()),
                active: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Whether requests to `host` use plain HTTP: loopback registries, as docker does, and
    /// those configured insecure.
    fn host_uses_plain_http(&self, host: &str) -> bool {
        let loopback = Reference::parse(&format!("{host}/x"))
            .map(|r| r.is_loopback_registry())
            .unwrap_or(false);
        loopback
            || self
                .inner
                .config
                .insecure
                .iter()
                .any(|h| normalize_registry_host(h) == host)
    }

    /// The configured mirrors of `reference`'s registry, in order.
    fn mirrors(&self, reference: &Reference) -> Vec<String> {
        self.inner
            .config
            .mirrors
            .iter()
            .filter(|(host, _)| normalize_registry_host(host) == reference.registry())
            .flat_map(|(_, m)| m.iter().map(|h| normalize_registry_host(h)))
            .collect()
    }

    fn active_endpoint(&self, reference: &Reference) -> String {
        let active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
        active
            .get(reference.registry())
            .cloned()
            .unwrap_or_else(|| reference.registry().to_string())
    }

    /// The endpoint for `host` (created on first use).
    fn endpoint(&self, host: &str, reference: &Reference) -> Result<Arc<Endpoint>, RegistryError> {
        // The lock only guards a map lookup/insert; a poisoned lock still holds a valid map.
        let mut endpoints = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(e) = endpoints.get(host) {
            return Ok(e.clone());
        }
        // Docker Hub's API is not served at `docker.io` itself.
        let network_host = if host == crate::reference::DEFAULT_REGISTRY {
            "index.docker.io"
        } else {
            host
        };
        let endpoint = Endpoint::new(
            network_host,
            self.host_uses_plain_http(host),
            self.inner.credentials.get(host).cloned(),
            self.inner.config.timeouts(),
        )
        .map_err(|e| self.map_error(reference, e))?;
        let endpoint = Arc::new(endpoint);
        endpoints.insert(host.to_string(), endpoint.clone());
        Ok(endpoint)
    }

    /// `?ns=` for a mirror: which registry's repository it is asked for.
    fn namespace<'a>(reference: &'a Reference, endpoint: &str) -> Option<&'a str> {
        (endpoint != reference.registry()).then(|| reference.registry())
    }

    fn map_error(&self, reference: &Reference, source: HttpError) -> RegistryError {
        let had_credentials = self.inner.credentials.contains_key(reference.registry());
        RegistryError::from_http(reference, had_credentials, source)
    }

    /// Runs `op` until it succeeds, fails permanently, or the retries are used up, sleeping
    /// with exponential backoff between attempts.
    pub async fn with_retries<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 0;
        let mut budget = RetryBudget::new(self.inner.config.retry_budget());
        loop {
            let started = std::time::Instant::now();
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.inner.config.retries => {
                    let delay = self.backoff(attempt);
                    attempt += 1;
                    if !budget.spend(started.elapsed() + delay) {
                        return Err(budget.spent_error(what, attempt, e));
                    }
                    tracing::warn!(error = %e, attempt, ?delay, "{what} failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The delay before retry number `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.config.retry_base_delay_ms;
        Duration::from_millis(base.saturating_mul(1 << attempt.min(6)).min(8000))
    }

    async fn fetch_manifest(
        &self,
        endpoint: &str,
        reference: &Reference,
        digest: Option<&Digest>,
        retry: bool,
    ) -> Result<(Bytes, Digest), RegistryError> {
        let ep = self.endpoint(endpoint, reference)?;
        let tag_or_digest = match digest.or(reference.digest()) {
            Some(d) => d.to_string(),
            None => reference.tag_or_digest(),
        };
        let url = ep.url(
            reference.repository(),
            "manifests",
            &tag_or_digest,
            Self::namespace(reference, endpoint),
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&ACCEPTED_MANIFEST_TYPES.join(", "))
                .expect("media types are valid header text"),
        );
        let once = || async {
            let fetched = async {
                let resp = ep
                    .get(&url, reference.repository(), headers.clone())
                    .await?;
                if resp.status() != StatusCode::OK {
                    return Err(ep.status_error(resp).await);
                }
                ep.read_document(resp, MAX_MANIFEST_SIZE as u64, "manifest")
                    .await
            };
            fetched.await.map_err(|e| self.map_error(reference, e))
        };
        let body = if retry {
            self.with_retries("fetching manifest", once).await?
        } else {
            once().await?
        };
        let actual = Digest::of_bytes(&body);
        if let Some(expected) = digest.or(reference.digest()) {
            if *expected != actual {
                return Err(RegistryError::ManifestDigestMismatch {
                    reference: reference.to_string(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok((body, actual))
    }

    /// Resolves `reference` to the image manifest for `platform`: follows an index / manifest
    /// list to its matching entry, verifying every document against its digest.
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        // Mirrors get one quick try each; the registry itself gets the retries.
        let mut fetched = None;
        for mirror in self.mirrors(reference) {
            match self.fetch_manifest(&mirror, reference, None, false).await {
                Ok(r) => {
                    fetched = Some((mirror, r));
                    break;
                }
                Err(e) => {
                    tracing::warn!(%reference, %mirror, error = %e, "mirror failed, trying the next endpoint");
                }
            }
        }
        let (endpoint, (body, digest)) = match fetched {
            Some(f) => f,
            None => {
                let origin = reference.registry().to_string();
                let r = self.fetch_manifest(&origin, reference, None, true).await?;
                (origin, r)
            }
        };
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reference.registry().to_string(), endpoint.clone());
        let bad = |digest: &Digest, reason: String| RegistryError::BadManifest {
            reference: reference.to_string(),
            digest: digest.to_string(),
            reason,
        };
        let doc = parse_manifest(&body, None).map_err(|e| bad(&digest, e.to_string()))?;
        let (index, chosen, body, digest, manifest) = match doc {
            ManifestDocument::Image(m) => (None, None, body, digest, m),
            ManifestDocument::Index(index) => {
                let pick = platform::select(
                    platform,
                    index
                        .manifests
                        .iter()
                        .enumerate()
                        .map(|(i, e)| (i, e.platform.as_ref())),
                );
                let Some(i) = pick else {
                    return Err(RegistryError::NoMatchingPlatform {
                        reference: reference.to_string(),
                        wanted: platform.to_string(),
                        available: index
                            .manifests
                            .iter()
                            .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
                            .collect(),
                    });
                };
                let entry = &index.manifests[i];
                let (child_body, child_digest) = self
                    .fetch_manifest(&endpoint, reference, Some(&entry.digest), true)
                    .await?;
                if child_body.len() as u64 != entry.size {
                    return Err(bad(
                        &child_digest,
                        format!(
                            "index {digest} says {} bytes, registry sent {}",
                            entry.size,
                            child_body.len()
                        ),
                    ));
                }
                let m = match parse_manifest(&child_body, None)
                    .map_err(|e| bad(&child_digest, e.to_string()))?
                {
                    ManifestDocument::Image(m) => m,
                    ManifestDocument::Index(_) => return Err(bad(
                        &child_digest,
                        "an index entry points to another index (nested indexes are not supported)"
                            .into(),
                    )),
                };
                (
                    Some((digest, body)),
                    entry.platform.clone(),
                    child_body,
                    child_digest,
                    m,
                )
            }
        };
        Ok(ResolvedImage {
            reference: reference.clone(),
            manifest_digest: digest,
            config: manifest.config.clone(),
            layers: manifest.layers.clone(),
            manifest,
            manifest_bytes: body,
            index,
            platform: chosen,
        })
    }

    /// Starts receiving blob `digest` of `reference`'s repository from byte `offset` (an HTTP
    /// Range request). The bytes are NOT verified here: the caller hashes the whole blob (its
    /// content store ingest does), which also covers the resumed case where no single response
    /// carries the whole blob. Registries that ignore Range send the whole blob: see
    /// [`BlobStream::start`].
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        self.fetch_blob_with_urls(reference, digest, offset, &[])
            .await
    }

    /// Like [`Self::fetch_blob`], also trying a descriptor's alternative `urls` (foreign layers)
    /// when the registry does not have the blob.
    pub async fn fetch_blob_with_urls(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
        urls: &[String],
    ) -> Result<BlobStream, RegistryError> {
        let endpoint = self.active_endpoint(reference);
        let ep = self.endpoint(&endpoint, reference)?;
        let url = ep.url(
            reference.repository(),
            "blobs",
            &digest.to_string(),
            Self::namespace(reference, &endpoint),
        );
        // Always a Range request, even from 0: we hash every byte ourselves anyway.
        let mut headers = HeaderMap::new();
        headers.insert(
            RANGE,
            HeaderValue::from_str(&format!("bytes={offset}-")).expect("a number is header text"),
        );
        let mut resp = ep
            .get(&url, reference.repository(), headers.clone())
            .await
            .map_err(|e| self.map_error(reference, e))?;
        // Foreign layers: the registry may not have the blob, its `urls` may. Never with the
        // registry's credentials (CVE-2020-15157).
        for alt in urls {
            if resp.status().is_success() {
                break;
            }
            if !(alt.starts_with("http://") || alt.starts_with("https://")) {
                continue;
            }
            resp = ep
                .get_anonymous(alt, headers.clone())
                .await
                .map_err(|e| self.map_error(reference, e))?;
        }
        let start = match resp.status() {
            StatusCode::PARTIAL_CONTENT => offset,
            StatusCode::OK => 0,
            _ => return Err(self.map_error(reference, ep.status_error(resp).await)),
        };
        Ok(BlobStream {
            start,
            len: resp.content_length(),
            url: resp.url().to_string(),
            stream: http::body_stream(resp, ep.timeouts().progress),
        })
    }

    /// Wraps a stream error into a [`RegistryError::BlobStream`] (transient: it is resumable).
    pub fn blob_stream_error(
        reference: &Reference,
        digest: &Digest,
        source: std::io::Error,
    ) -> RegistryError {
        RegistryError::BlobStream {
            reference: reference.to_string(),
            registry: reference.registry().to_string(),
            digest: digest.clone(),
            source,
        }
    }

    /// A blocking [`std::io::Read`] over a blob, for synchronous code (the Windows layer
    /// converter): resumes on dropped connections and fails with `InvalidData` at the end if
    /// the content does not hash to `digest`. Must not be called on a runtime thread: it
    /// drives the download with `handle.block_on`.
    pub fn blob_reader(
        &self,
        handle: tokio::runtime::Handle,
        reference: &Reference,
        digest: &Digest,
    ) -> BlobReader {
        BlobReader::new(
            self.clone(),
            handle,
            reference.clone(),
            digest.clone(),
            Vec::new(),
        )
    }

    /// Like [`Self::blob_reader`] for a manifest's layer descriptor: also tries its `urls`
    /// (foreign layers, e.g. Windows base layers) when the registry does not serve the blob.
    pub fn blob_reader_for(
        &self,
        handle: tokio::runtime::Handle,
        reference: &Reference,
        layer: &Descriptor,
    ) -> BlobReader {
        BlobReader::new(
            self.clone(),
            handle,
            reference.clone(),
            layer.digest.clone(),
            layer.urls.clone(),
        )
    }
}
