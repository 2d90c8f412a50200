//! Image operations of the agent: pull, list, inspect, remove, prune, load, unpack. The work
//! is zlayer-image's; this maps its errors onto the agent's and adds what needs knowledge of
//! containers (an image in use is never removed, a snapshot in use never pruned).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zlayer_image::pull::{self, PullError, PullOptions};
use zlayer_image::registry::{
    Platform, RegistryClient, RegistryConfig, RegistryError, RegistryErrorKind,
};
use zlayer_image::store::{ImageConfiguration, ImageStore, StoreError};
use zlayer_image::Reference;

/// The image crate's types the front ends speak in (they depend on the agent only).
pub use zlayer_image::pull::{ProgressRenderer, PullEvent};
pub use zlayer_image::store::{ImageDetails, ImageSummary, PruneReport, RemoveReport};

use crate::error::{error_chain, AgentError, ErrorKind, Result};
use crate::Agent;

/// An image ready to run: its id, config and snapshot directories (topmost first, the order
/// overlayfs wants for `lowerdir`).
pub struct RunImage {
    pub id: String,
    pub config: ImageConfiguration,
    pub layers: Vec<PathBuf>,
}

/// The result of a pull, as the API reports it at the end of the progress stream.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullSummary {
    pub reference: String,
    pub digest: String,
    pub id: String,
}

pub(crate) fn store_err(e: StoreError) -> AgentError {
    let kind = match &e {
        StoreError::NotFound(_) => ErrorKind::NotFound,
        StoreError::Ambiguous { .. } | StoreError::Reference(_) => ErrorKind::InvalidInput,
        StoreError::InUse { .. } => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    };
    AgentError::new(kind, error_chain(&e))
}

fn pull_err(e: PullError) -> AgentError {
    let kind = match &e {
        PullError::Registry(r) => registry_kind(r),
        _ => ErrorKind::Internal,
    };
    AgentError::new(kind, error_chain(&e))
}

/// The API's answer to a failed pull, from the registry failure's kind (never its wording).
fn registry_kind(e: &RegistryError) -> ErrorKind {
    match e.kind() {
        RegistryErrorKind::NotFound => ErrorKind::NotFound,
        RegistryErrorKind::InvalidRequest => ErrorKind::InvalidInput,
        // The registry could not be reached (name resolution, connect, TLS): the image is not
        // available from here. Docker's create answers 404 for a missing image, and a pull
        // that cannot reach the registry the client named leaves it just as missing; a 5xx
        // would blame the agent for the client's choice of registry.
        RegistryErrorKind::Unreachable => ErrorKind::NotFound,
        RegistryErrorKind::Unauthorized
        | RegistryErrorKind::Denied
        | RegistryErrorKind::TooLarge
        | RegistryErrorKind::Timeout
        | RegistryErrorKind::Network
        | RegistryErrorKind::InvalidResponse
        | RegistryErrorKind::Server
        | RegistryErrorKind::Config => ErrorKind::Internal,
    }
}

fn parse_reference(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| AgentError::invalid(e.to_string()))
}

/// Builds the registry client from the daemon's config.
pub(crate) fn registry_client(file: &crate::config::FileConfig) -> Result<RegistryClient> {
    let mut cfg = RegistryConfig {
        insecure: file.registries.insecure.clone(),
        max_concurrent_downloads: file.max_concurrent_downloads.max(1),
        progress_timeout_secs: file.registries.progress_timeout_secs,
        document_timeout_secs: file.registries.document_timeout_secs,
        retries: file.registries.retries,
        retry_budget_secs: file.registries.retry_budget_secs,
        ..RegistryConfig::default()
    };
    for (host, c) in &file.registries.auths {
        cfg.auths.insert(
            host.clone(),
            zlayer_image::registry::Credentials::Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            },
        );
    }
    RegistryClient::new(cfg).map_err(|e| AgentError::internal(e.to_string()))
}

impl Agent {
    /// Pulls `reference` (for `platform`, default the host's), reporting progress.
    pub async fn pull_image(
        &self,
        reference: &str,
        platform: Option<&str>,
        progress: impl Fn(PullEvent) + Send + Sync + 'static,
    ) -> Result<PullSummary> {
        let reference = parse_reference(reference)?;
        let platform = match platform {
            Some(p) => Platform::parse(p).map_err(|e| AgentError::invalid(e.to_string()))?,
            None => Platform::host(),
        };
        // Bytes downloaded feed `zlayer_pull_bytes_total`, for failed pulls too.
        let downloaded = Arc::new(parking_lot::Mutex::new(pull::DownloadedBytes::default()));
        let counter = downloaded.clone();
        let progress = move |event: PullEvent| {
            counter.lock().observe(&event);
            progress(event);
        };
        let file = &self.config().file;
        let opts = PullOptions {
            min_free_bytes: file.min_free_space_mib.saturating_mul(1 << 20),
            max_unpacked_bytes: file
                .max_image_unpacked_mib
                .map(|m| m.saturating_mul(1 << 20)),
            ..PullOptions::default()
        };
        // The pull holds its own GC lease and records the image under `reference` at the end.
        let result = pull::pull(
            self.images(),
            self.registry(),
            &reference,
            &platform,
            &opts,
            progress,
        )
        .await;
        self.services.metrics.pulled(downloaded.lock().total());
        let pulled = result.map_err(pull_err)?;
        tracing::info!(reference = %reference, digest = %pulled.manifest_digest, "pulled");
        Ok(PullSummary {
            reference: reference.to_string(),
            digest: pulled.manifest_digest.to_string(),
            id: pulled.config.digest.to_string(),
        })
    }

    pub(crate) fn list_images_blocking(&self) -> Result<Vec<ImageSummary>> {
        self.images().list().map_err(store_err)
    }

    pub(crate) fn inspect_image_blocking(&self, query: &str) -> Result<ImageDetails> {
        self.images().inspect(query).map_err(store_err)
    }

    /// `rmi`: untags `query`; deletes the image when no names are left. An image used by a
    /// container is refused unless `force` (and even then its blobs stay until no container
    /// uses them: `prune` decides).
    pub(crate) fn remove_image_blocking(&self, query: &str, force: bool) -> Result<RemoveReport> {
        let used: HashSet<String> = self
            .containers()
            .list()?
            .into_iter()
            .map(|c| c.image_id)
            .collect();
        self.images()
            .remove(query, |rec| {
                !force && used.contains(&rec.config_digest.to_string())
            })
            .map_err(store_err)
    }

    /// `image prune`: removes dangling images and every blob and snapshot nothing references.
    /// Snapshots of images used by containers are kept.
    pub async fn prune_images(&self) -> Result<PruneReport> {
        let store = self.images().clone();
        let containers = self.containers().list()?;
        tokio::task::spawn_blocking(move || {
            let mut in_use = HashSet::new();
            for c in containers {
                if let Ok(details) = store.inspect(&c.image_id) {
                    in_use.extend(details.layers.iter().filter_map(|l| l.snapshot));
                }
            }
            store.prune(&in_use)
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
        .map_err(store_err)
    }

    /// `load -i PATH`: an OCI layout directory, an OCI archive or a `docker save` tarball.
    pub async fn load_images(&self, path: &Path) -> Result<Vec<String>> {
        let store = self.images().clone();
        let path = path.to_path_buf();
        let refs = tokio::task::spawn_blocking(move || zlayer_image::load::load(&store, &path))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?
            .map_err(|e| AgentError::invalid(error_chain(&e)))?;
        Ok(refs.into_iter().map(|r| r.to_string()).collect())
    }

    /// `image unpack REF DIR`: the flattened root filesystem.
    pub async fn unpack_image(&self, query: &str, dir: &Path) -> Result<()> {
        let store = self.images().clone();
        let query = query.to_string();
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            zlayer_image::flatten::unpack_image_to(&store, &query, &dir)
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
        .map(|_| ())
        .map_err(store_err)
    }

    /// Finds (pulling when missing and allowed) and unpacks the image a container runs.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn image_for_run(
        &self,
        image: &str,
        pull_policy: Option<&str>,
    ) -> Result<RunImage> {
        let policy = pull_policy.unwrap_or("missing");
        let present = match self.images().resolve(image) {
            Ok(_) => true,
            Err(StoreError::NotFound(_)) => false,
            Err(e) => return Err(store_err(e)),
        };
        match (policy, present) {
            ("always", _) | ("missing", false) => {
                self.pull_image(image, None, |_| {}).await.map_err(|e| {
                    AgentError::new(
                        e.kind,
                        format!(
                            "unable to find image {image:?} locally, and pulling it failed: {}",
                            e.message
                        ),
                    )
                })?;
            }
            ("never", false) => {
                return Err(AgentError::not_found(format!(
                    "no such image: {image} (pull policy is never)"
                )))
            }
            ("missing" | "never", true) => {}
            (other, _) => {
                return Err(AgentError::invalid(format!(
                    "unknown pull policy {other:?}: use missing, always or never"
                )))
            }
        }
        let store: Arc<ImageStore> = Arc::new(self.images().clone());
        let image = image.to_string();
        tokio::task::spawn_blocking(move || {
            let rec = store.resolve(&image).map_err(store_err)?;
            let id = rec.config_digest.to_string();
            let mut layers: Vec<PathBuf> = store
                .unpack_layers(&id)
                .map_err(store_err)?
                .into_iter()
                .map(|s| s.path)
                .collect();
            layers.reverse();
            let config = store.config(&id).map_err(store_err)?;
            Ok(RunImage { id, config, layers })
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
    }

    /// The image's StopSignal, if it sets one.
    pub(crate) fn image_stop_signal(&self, image_id: &str) -> Option<String> {
        self.images()
            .inspect(image_id)
            .ok()
            .and_then(|d| d.stop_signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found(detail: &str) -> PullError {
        PullError::Registry(RegistryError::NotFound {
            reference: "127.0.0.1:5000/x:latest".into(),
            registry: "127.0.0.1:5000".into(),
            detail: detail.into(),
        })
    }

    #[test]
    fn rewording_a_registry_message_never_turns_a_404_into_a_500() {
        // Whatever the registry (or a later edit of our messages) says, not found stays 404.
        for detail in [
            "manifest unknown",
            "HTTP 404: no such thing",
            "server exploded",
            "",
        ] {
            assert_eq!(
                pull_err(not_found(detail)).kind,
                ErrorKind::NotFound,
                "{detail:?}"
            );
        }
        // And a registry failure that merely mentions "not found" is not a missing image.
        let broken = PullError::Registry(RegistryError::BadManifest {
            reference: "127.0.0.1:5000/x:latest".into(),
            digest: "sha256:00".into(),
            reason: "layer not found in the manifest".into(),
        });
        assert_eq!(pull_err(broken).kind, ErrorKind::Internal);
    }

    #[test]
    fn platform_problems_are_the_callers() {
        let e = PullError::Registry(RegistryError::NoMatchingPlatform {
            reference: "x".into(),
            wanted: "linux/s390x".into(),
            available: vec!["linux/amd64".into()],
        });
        assert_eq!(pull_err(e).kind, ErrorKind::InvalidInput);
    }
}
