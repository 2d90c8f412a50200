//! The API's JSON bodies: what axum's `Json` extractor hands each handler, followed by the
//! checks the handler runs before it changes anything.

use serde::de::DeserializeOwned;
use zlayer_agent::containers::request::{to_run_options, CreateRequest};
use zlayer_agent::services::DeployRequest;
use zlayer_api::routes::images::{LoadRequest, PullRequest, UnpackRequest};
use zlayer_api::routes::networks::CreateNetwork;
use zlayer_api::routes::services::ScaleRequest;
use zlayer_api::routes::volumes::CreateVolume;
use zlayer_image::registry::Platform;
use zlayer_image::Reference;
use zlayer_network::PortMapping;
use zlayer_runtime::ExecSpec;

fn decode<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match serde_json::from_slice(body) {
        Ok(v) => Some(v),
        Err(e) => {
            // The 400/422 message names the field and position: it must render.
            let _ = e.to_string();
            None
        }
    }
}

/// The first byte picks the route whose body the rest is.
pub fn api_json(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    match route % 9 {
        0 => create_container(body),
        1 => {
            if let Some(req) = decode::<DeployRequest>(body) {
                let _ = zlayer_spec::parse_str(&req.source, &req.file).map_err(|e| e.to_string());
            }
        }
        2 => {
            if let Some(req) = decode::<PullRequest>(body) {
                let _ = Reference::parse(&req.reference).map_err(|e| e.to_string());
                if let Some(p) = &req.platform {
                    let _ = Platform::parse(p).map_err(|e| e.to_string());
                }
            }
        }
        3 => {
            if let Some(req) = decode::<ScaleRequest>(body) {
                let _ = req.service.split_once('/');
            }
        }
        4 => {
            if let Some(req) = decode::<CreateVolume>(body) {
                let _ = zlayer_agent::volumes::validate_volume_name(&req.name);
            }
        }
        5 => {
            if let Some(req) = decode::<CreateNetwork>(body) {
                if let Some(s) = &req.subnet {
                    let _ = s.parse::<ipnet::Ipv4Net>().map_err(|e| e.to_string());
                }
            }
        }
        6 => {
            // `exec` takes its spec as JSON in the query string.
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = serde_json::from_str::<ExecSpec>(text).map_err(|e| e.to_string());
            }
        }
        7 => {
            let _ = decode::<LoadRequest>(body);
        }
        _ => {
            if let Some(req) = decode::<UnpackRequest>(body) {
                let _ = Reference::parse(&req.reference).map_err(|e| e.to_string());
            }
        }
    }
}

/// `POST /v1/containers`: the body, its translation into run options, its published ports.
fn create_container(body: &[u8]) {
    let Some(req) = decode::<CreateRequest>(body) else {
        return;
    };
    // Named volumes' directories are created here; removed with it.
    let dir = tempfile::Builder::new()
        .prefix("zlayer-fuzz-volumes-")
        .tempdir()
        .expect("creating the volumes directory");
    let _ = to_run_options(&req, &dir.path().join("volumes")).map_err(|e| e.to_string());
    for p in &req.publish {
        let _ = p.parse::<PortMapping>().map_err(|e| e.to_string());
    }
    let _ = Reference::parse(&req.image).map_err(|e| e.to_string());
}
