//! The async doors onto agent calls whose work blocks (the state database, the content
//! store's files) and whose bodies live with their subject (`images`, `services`). Each runs
//! its work on tokio's blocking pool, so the agent's public API is async throughout and no
//! front end decides which calls block.

use std::sync::Arc;

use zlayer_image::store::{ImageDetails, ImageSummary, RemoveReport};

use crate::error::Result;
use crate::services::{DeployRequest, DeployResponse, ServiceInfo};
use crate::Agent;

impl Agent {
    /// `images`.
    pub async fn list_images(self: &Arc<Self>) -> Result<Vec<ImageSummary>> {
        self.run_blocking(|a| a.list_images_blocking()).await
    }

    /// `image inspect`: by name, digest or id prefix.
    pub async fn inspect_image(self: &Arc<Self>, query: &str) -> Result<ImageDetails> {
        let query = query.to_string();
        self.run_blocking(move |a| a.inspect_image_blocking(&query))
            .await
    }

    /// `rmi`: untags `query`; deletes the image when no names are left (see
    /// `remove_image_blocking` for `force`).
    pub async fn remove_image(self: &Arc<Self>, query: &str, force: bool) -> Result<RemoveReport> {
        let query = query.to_string();
        self.run_blocking(move |a| a.remove_image_blocking(&query, force))
            .await
    }

    /// `deploy`: validates the spec, computes the plan and (unless `dry_run`) stores it as the
    /// desired state.
    pub async fn deploy(self: &Arc<Self>, req: DeployRequest) -> Result<DeployResponse> {
        self.run_blocking(move |a| a.deploy_blocking(req)).await
    }

    /// `scale SERVICE N`: the deployment, the service and the replica count it had.
    pub async fn scale(
        self: &Arc<Self>,
        key: &str,
        replicas: u32,
    ) -> Result<(String, String, u32)> {
        let key = key.to_string();
        self.run_blocking(move |a| a.scale_blocking(&key, replicas))
            .await
    }

    /// `services`: one row per declared service.
    pub async fn list_services(self: &Arc<Self>) -> Result<Vec<ServiceInfo>> {
        self.run_blocking(|a| a.list_services_blocking()).await
    }
}
