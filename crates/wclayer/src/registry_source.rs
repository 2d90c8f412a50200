//! [`LayerSource`] over the image crate's registry client: blobs are read with its blocking,
//! resuming, verifying [`zlayer_image::registry::BlobReader`]; a registry 404 turns into
//! [`BlobFetch::NotFound`] so the pipeline falls back to a foreign layer's `urls`.

use std::collections::HashMap;

use zlayer_image::registry::{
    Credentials, Platform, RegistryClient, RegistryConfig, RegistryError,
};
use zlayer_image::{Digest, Reference};

use crate::error::{Error, Result};
use crate::source::{
    BlobFetch, ConfigDescriptor, LayerSource, RegistryAuth, ResolvedLayerDescriptor, WindowsImage,
};

/// A registry-backed source. Owns a small tokio runtime that drives the async client while the
/// converter reads synchronously on its own thread.
pub struct RegistrySource {
    client: RegistryClient,
    runtime: tokio::runtime::Runtime,
}

fn fetch_err(what: impl Into<String>, e: impl std::fmt::Display) -> Error {
    Error::Fetch {
        what: what.into(),
        reason: e.to_string(),
    }
}

impl RegistrySource {
    /// Builds a client from `config`, adding `auth` for `image`'s registry host (credentials
    /// are bound here; the `auth` argument of [`LayerSource::fetch_blob`] is not consulted).
    pub fn new(mut config: RegistryConfig, image: &str, auth: &RegistryAuth) -> Result<Self> {
        let reference = Reference::parse(image).map_err(|e| fetch_err(image, e))?;
        let creds = match auth {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Basic { username, password } => Some(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            RegistryAuth::Bearer(token) => Some(Credentials::Token {
                token: token.clone(),
            }),
        };
        if let Some(c) = creds {
            let mut auths: HashMap<String, Credentials> = std::mem::take(&mut config.auths);
            auths.insert(reference.registry().to_string(), c);
            config.auths = auths;
        }
        let client = RegistryClient::new(config).map_err(|e| fetch_err(image, e))?;
        // A multi-threaded runtime: the blob reader calls `Handle::block_on` from the converter
        // thread, which only drives I/O when worker threads exist.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("wclayer-registry")
            .build()
            .map_err(|e| fetch_err("starting the registry runtime", e))?;
        Ok(RegistrySource { client, runtime })
    }

    /// Resolves `image` for windows/amd64: its config and layer descriptors.
    pub fn resolve(&self, image: &str) -> Result<(WindowsImage, Vec<ResolvedLayerDescriptor>)> {
        let reference = Reference::parse(image).map_err(|e| fetch_err(image, e))?;
        let platform = Platform {
            os: "windows".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let resolved = self
            .runtime
            .block_on(self.client.resolve(&reference, &platform))
            .map_err(|e| fetch_err(image, e))?;
        let layers = resolved
            .layers
            .iter()
            .map(|d| ResolvedLayerDescriptor {
                digest: d.digest.to_string(),
                media_type: d.media_type.clone(),
                size: d.size,
                urls: d.urls.clone(),
            })
            .collect();
        Ok((
            WindowsImage {
                reference: image.to_string(),
                config: ConfigDescriptor {
                    digest: resolved.config.digest.to_string(),
                    size: resolved.config.size,
                },
            },
            layers,
        ))
    }
}

impl LayerSource for RegistrySource {
    fn fetch_blob(
        &self,
        image: &str,
        _auth: &RegistryAuth,
        digest: &str,
        _size: u64,
    ) -> Result<BlobFetch> {
        let reference = Reference::parse(image).map_err(|e| fetch_err(image, e))?;
        let digest_p = Digest::parse(digest).map_err(|e| fetch_err(digest, e))?;
        // Probe first so "the registry does not have it" is known before any byte is handed
        // out; the reader then streams (and resumes) the blob itself.
        match self
            .runtime
            .block_on(self.client.fetch_blob(&reference, &digest_p, 0))
        {
            Ok(stream) => drop(stream),
            Err(RegistryError::NotFound { .. }) => return Ok(BlobFetch::NotFound),
            Err(e) => return Err(fetch_err(format!("blob {digest} of {image}"), e)),
        }
        let reader = self
            .client
            .blob_reader(self.runtime.handle().clone(), &reference, &digest_p);
        Ok(BlobFetch::Found(Box::new(reader)))
    }
}
