//! The API's OpenAPI 3 document, derived from the handlers' own request and response types
//! (`utoipa`): served at `GET /v1/openapi.json`, and what `scripts/schemathesis.sh` checks a
//! live daemon against.
//!
//! Every operation is declared next to its handler (`#[utoipa::path]` in `routes/`); the error
//! responses every route can give are added here once ([`CommonErrors`]) so no operation can
//! forget one: the JSON [`ErrorBody`] with 400 (bad input), 404, 405, 409, 413 (body over the
//! limit), 415 (not JSON), 422 (JSON of the wrong shape) and 500.

use std::sync::OnceLock;

use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::routes::{
    archive, containers, images, networks, pause, port, rename, services, top, volumes,
};
use crate::types::ErrorBody;

/// The document's root: every operation and the schemas they name.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "zlayer-agent API",
        description = "The REST API of the zlayer-agent daemon, served on its unix socket \
                       (`/run/zlayer/agent.sock` by default). JSON bodies everywhere; long \
                       operations stream JSON lines (`application/x-ndjson`) or multiplexed \
                       stdout/stderr frames.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        crate::server::version,
        crate::server::ping,
        crate::server::openapi_json,
        images::list,
        images::remove,
        images::pull,
        images::inspect,
        images::prune,
        images::load,
        images::unpack,
        containers::list,
        containers::create,
        containers::inspect,
        containers::remove,
        containers::stop,
        containers::kill,
        pause::pause,
        pause::unpause,
        rename::rename,
        port::port,
        top::top,
        containers::wait,
        containers::logs,
        containers::stats,
        containers::exec,
        containers::attach,
        archive::stat,
        archive::get,
        archive::put,
        volumes::list,
        volumes::create,
        volumes::remove,
        services::deploy,
        services::undeploy,
        services::list,
        services::scale,
        services::events,
        networks::list,
        networks::create,
        networks::remove,
    ),
    components(schemas(ErrorBody, zlayer_agent::containers::ExecSpec)),
    modifiers(&CommonErrors),
    tags(
        (name = "system", description = "Version, liveness, this document"),
        (name = "images", description = "Pull, list, inspect, remove, load and unpack images"),
        (name = "containers", description = "Run and manage containers"),
        (name = "volumes", description = "Named volumes"),
        (name = "services", description = "Deployments, services and events"),
        (name = "networks", description = "Bridge networks"),
    )
)]
pub struct ApiDoc;

/// The document, with this build's version.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The document as served (built once).
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .expect("the OpenAPI document of plain types serialises")
    })
}

/// The error statuses every route can answer, with what each means.
const COMMON_ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "Bad input: a value that is invalid, a query string or path that does not parse",
    ),
    (
        "404",
        "The named container, image, service, volume or network does not exist",
    ),
    ("405", "The method is not allowed on this path"),
    (
        "409",
        "The request conflicts with the current state (name taken, in use, not running)",
    ),
    ("413", "The request body is larger than the API's limit"),
    ("415", "The request body is not `application/json`"),
    ("422", "The JSON body does not have the expected shape"),
    (
        "500",
        "The agent failed (I/O error, runtime failure); the message says what",
    ),
];

/// Adds [`COMMON_ERRORS`] with the [`ErrorBody`] schema to every operation.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .entry(ErrorBody::name().into_owned())
            .or_insert_with(ErrorBody::schema);
        let error_ref = RefOr::Ref(utoipa::openapi::Ref::from_schema_name(ErrorBody::name()));
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                for (status, description) in COMMON_ERRORS {
                    op.responses
                        .responses
                        .entry((*status).to_string())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(*description)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(error_ref.clone()))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is in the document with the same method, and the
    /// document describes no route the router lacks. The routes are read from the router's
    /// source, the one place they are listed.
    #[test]
    fn document_covers_every_route() {
        let source = include_str!("server.rs");
        let mut served = std::collections::BTreeSet::new();
        let mut rest = source;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let path_start = rest.find('"').expect("a route path") + 1;
            let path_len = rest[path_start..].find('"').expect("its end");
            let path = &rest[path_start..path_start + path_len];
            let end = rest.find(")\n").unwrap_or(rest.len());
            let spec = &rest[path_start + path_len..end];
            for method in ["get", "post", "delete", "put", "patch"] {
                if spec.contains(&format!("{method}(")) || spec.contains(&format!(".{method}(")) {
                    served.insert(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        // The metrics listener's own router is not the API.
        served.retain(|r| !r.ends_with("/metrics"));
        let doc = document();
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
            ] {
                if op.is_some() {
                    documented.insert(format!("{method} {path}"));
                }
            }
        }
        assert!(served.len() > 25, "found only {served:?} in server.rs");
        assert_eq!(served, documented);
    }

    #[test]
    fn every_operation_documents_its_errors_and_has_an_id() {
        let doc = document();
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.delete].into_iter().flatten() {
                assert!(op.operation_id.is_some(), "{path}");
                for (status, _) in COMMON_ERRORS {
                    assert!(
                        op.responses.responses.contains_key(*status),
                        "{path} {status}"
                    );
                }
            }
        }
        let json: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3."));
        assert!(json["components"]["schemas"]["CreateRequest"].is_object());
    }
}
