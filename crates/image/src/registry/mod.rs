//! The registry client: resolves a reference to a platform-specific manifest and streams blobs,
//! on top of the `oci-client` crate (which does the distribution protocol, the token dance and
//! HTTP Range requests for us).

mod auth;
mod blob_reader;
mod manifest;
mod platform;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};

pub use auth::{
    default_docker_config_path, load_docker_config, normalize_registry_host, Credentials,
};
pub use blob_reader::BlobReader;
pub use manifest::{
    parse_manifest, Descriptor, ImageIndex, ImageManifest, IndexEntry, ManifestDocument,
    ACCEPTED_MANIFEST_TYPES, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG,
    OCI_INDEX, OCI_MANIFEST,
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
    pub retries: u32,
    /// First retry delay; doubled on each further attempt (capped at 8 s).
    pub retry_base_delay_ms: u64,
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
        }
    }
}

/// Everything that can go wrong talking to a registry. Each names the image and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid platform {platform:?}: {reason}")]
    InvalidPlatform { platform: String, reason: String },
    #[error("cannot read docker config {path}: {reason}")]
    DockerConfig { path: PathBuf, reason: String },
    #[error("{reference}: no image for platform {wanted} in the index (available: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: Vec<String>,
    },
    #[error("{reference}: invalid manifest {digest}: {reason}")]
    BadManifest {
        reference: String,
        digest: String,
        reason: String,
    },
    #[error("{reference}: manifest digest mismatch: expected {expected}, got {actual}")]
    ManifestDigestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{reference}: not found in registry {registry} ({detail})")]
    NotFound {
        reference: String,
        registry: String,
        detail: String,
    },
    #[error("{reference}: registry {registry} refused access ({}): {detail}", if *had_credentials { "credentials were rejected" } else { "no credentials configured for it" })]
    Unauthorized {
        reference: String,
        registry: String,
        had_credentials: bool,
        detail: String,
    },
    #[error("{reference}: registry {registry}: {source}")]
    Registry {
        reference: String,
        registry: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("{reference}: reading blob {digest} from registry {registry} failed: {source}")]
    BlobStream {
        reference: String,
        registry: String,
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Whether trying again may help: server errors (5xx, 429), timeouts and dropped
    /// connections; never auth failures, unknown names or bad content.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Registry { source, .. } => oci_error_is_transient(source),
            RegistryError::BlobStream { .. } => true,
            _ => false,
        }
    }
}

fn oci_error_is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RequestError(r) => {
            r.is_timeout() || r.is_connect() || r.is_request() || r.is_body() || r.is_decode()
        }
        OciDistributionError::IoError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, oci_client::errors::OciErrorCode::Toomanyrequests)),
        _ => false,
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
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
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
    /// One oci-client per registry host: the plain-HTTP decision is per host, and each keeps
    /// its own token cache and connection pool.
    clients: Mutex<HashMap<String, oci_client::Client>>,
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
                clients: Mutex::new(HashMap::new()),
                active: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Whether requests to `reference`'s registry use plain HTTP: loopback registries, as
    /// docker does, and those configured insecure.
    pub fn uses_plain_http(&self, reference: &Reference) -> bool {
        self.host_uses_plain_http(reference.registry())
    }

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

    fn oci_client(&self, endpoint: &str) -> oci_client::Client {
        let host = endpoint.to_string();
        // The lock only guards a map lookup/insert; a poisoned lock still holds a valid map.
        let mut clients = self.inner.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(host)
            .or_insert_with(|| {
                let protocol = if self.host_uses_plain_http(endpoint) {
                    ClientProtocol::Http
                } else {
                    ClientProtocol::Https
                };
                oci_client::Client::new(ClientConfig {
                    protocol,
                    max_concurrent_download: self.inner.config.max_concurrent_downloads.max(1),
                    connect_timeout: Some(Duration::from_secs(30)),
                    // Detects a stalled (not closed) connection so it can be resumed.
                    read_timeout: Some(Duration::from_secs(60)),
                    ..Default::default()
                })
            })
            .clone()
    }

    fn auth_for(&self, endpoint: &str) -> RegistryAuth {
        self.inner
            .credentials
            .get(endpoint)
            .map(Credentials::to_oci)
            .unwrap_or(RegistryAuth::Anonymous)
    }

    fn oci_reference(
        reference: &Reference,
        digest: Option<&Digest>,
        endpoint: &str,
    ) -> oci_client::Reference {
        let registry = reference.registry().to_string();
        let repository = reference.repository().to_string();
        let mut r = match digest.or(reference.digest()) {
            Some(d) => oci_client::Reference::with_digest(registry, repository, d.to_string()),
            None => {
                oci_client::Reference::with_tag(registry, repository, reference.tag_or_digest())
            }
        };
        if endpoint != reference.registry() {
            r.set_mirror_registry(endpoint.to_string());
        }
        r
    }

    fn map_error(&self, reference: &Reference, source: OciDistributionError) -> RegistryError {
        let registry = reference.registry().to_string();
        match source {
            OciDistributionError::UnauthorizedError { url } => RegistryError::Unauthorized {
                reference: reference.to_string(),
                had_credentials: self.inner.credentials.contains_key(&registry),
                registry,
                detail: url,
            },
            OciDistributionError::AuthenticationFailure(detail) => RegistryError::Unauthorized {
                reference: reference.to_string(),
                had_credentials: self.inner.credentials.contains_key(&registry),
                registry,
                detail,
            },
            OciDistributionError::RegistryError { envelope, url }
                if envelope.errors.iter().any(|e| {
                    use oci_client::errors::OciErrorCode::*;
                    matches!(
                        e.code,
                        ManifestUnknown | NameUnknown | BlobUnknown | NotFound
                    )
                }) =>
            {
                RegistryError::NotFound {
                    reference: reference.to_string(),
                    registry,
                    detail: format!("{envelope} at {url}"),
                }
            }
            OciDistributionError::RegistryError { envelope, url }
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::Unauthorized
                            | oci_client::errors::OciErrorCode::Denied
                    )
                }) =>
            {
                RegistryError::Unauthorized {
                    reference: reference.to_string(),
                    had_credentials: self.inner.credentials.contains_key(&registry),
                    registry,
                    detail: format!("{envelope} at {url}"),
                }
            }
            OciDistributionError::ServerError {
                code: 404,
                url,
                message,
            } => RegistryError::NotFound {
                reference: reference.to_string(),
                registry,
                detail: format!("{url}: {message}"),
            },
            source => RegistryError::Registry {
                reference: reference.to_string(),
                registry,
                source,
            },
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or the retries are used up, sleeping
    /// with exponential backoff between attempts.
    pub async fn with_retries<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.inner.config.retries => {
                    let delay = self.backoff(attempt);
                    attempt += 1;
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
        let client = self.oci_client(endpoint);
        let oci_ref = Self::oci_reference(reference, digest, endpoint);
        let auth = self.auth_for(endpoint);
        let once = || async {
            client
                .pull_manifest_raw(&oci_ref, &auth, ACCEPTED_MANIFEST_TYPES)
                .await
                .map(|(body, _)| body)
                .map_err(|e| self.map_error(reference, e))
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
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::BadManifest {
                reference: reference.to_string(),
                digest: actual.to_string(),
                reason: format!(
                    "{} bytes is larger than the {MAX_MANIFEST_SIZE} allowed",
                    body.len()
                ),
            });
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
        let doc = parse_manifest(&body, None).map_err(|r| bad(&digest, r))?;
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
                    .map_err(|r| bad(&child_digest, r))?
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
        let client = self.oci_client(&endpoint);
        let oci_ref = Self::oci_reference(reference, None, &endpoint);
        client
            .store_auth_if_needed(oci_ref.resolve_registry(), &self.auth_for(&endpoint))
            .await;
        let descriptor = oci_client::manifest::OciDescriptor {
            digest: digest.to_string(),
            urls: (!urls.is_empty()).then(|| urls.to_vec()),
            ..Default::default()
        };
        // Always a Range request, even from 0: a 206 answer is not re-hashed by oci-client, and
        // we hash every byte ourselves anyway.
        let response = client
            .pull_blob_stream_partial(&oci_ref, &descriptor, offset, None)
            .await
            .map_err(|e| self.map_error(reference, e))?;
        let (start, sized) = match response {
            BlobResponse::Partial(s) => (offset, s),
            BlobResponse::Full(s) => (0, s),
        };
        Ok(BlobStream {
            start,
            len: sized.content_length,
            stream: sized.stream.boxed(),
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

    /// Reads a small blob (an image config) whole into memory, verified against `desc`.
    pub async fn fetch_small_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let bad = |reason: String| RegistryError::BadManifest {
            reference: reference.to_string(),
            digest: desc.digest.to_string(),
            reason,
        };
        if desc.size > limit {
            return Err(bad(format!(
                "blob of {} bytes exceeds the {limit} byte limit",
                desc.size
            )));
        }
        let data = self
            .with_retries("fetching blob", || async {
                let mut s = self.fetch_blob(reference, &desc.digest, 0).await?;
                let mut buf = Vec::with_capacity(desc.size as usize);
                while let Some(chunk) = s.stream.next().await {
                    let chunk =
                        chunk.map_err(|e| Self::blob_stream_error(reference, &desc.digest, e))?;
                    if (buf.len() + chunk.len()) as u64 > desc.size {
                        return Err(bad(format!(
                            "registry sent more than the {} bytes the manifest declares",
                            desc.size
                        )));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(buf)
            })
            .await?;
        let actual = Digest::of_bytes(&data);
        if actual != desc.digest || data.len() as u64 != desc.size {
            return Err(bad(format!(
                "content verification failed: expected {} ({} bytes), got {actual} ({} bytes)",
                desc.digest,
                desc.size,
                data.len()
            )));
        }
        Ok(data)
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
