//! `deploy`, `undeploy`, `services`, `scale`, `events`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use hyper::Method;
use zlayer_agent::services::events::Event;
use zlayer_agent::services::{DeployRequest, DeployResponse, ServiceInfo};
use zlayer_api::routes::services::{ScaleRequest, ScaleResponse, UndeployResponse};
use zlayer_api::Client;

use super::CmdResult;
use crate::output::{print_json, print_table, Format};

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The deployment spec (YAML).
    pub file: PathBuf,
    /// Validate and print what would change, without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct UndeployArgs {
    /// The deployment's name (`deployment:` in the spec).
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// `deployment/service`, or a service name unique across deployments.
    pub service: String,
    pub replicas: u32,
}

/// The client reads the file and sends its text: the daemon parses it, so errors carry
/// `file:line:col`. Host variables referenced with `from_host` are sent from this process's
/// environment (only those, so the daemon never sees the rest of the client's environment).
pub async fn deploy(client: &Client, a: DeployArgs) -> CmdResult {
    let source = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let base_dir = std::path::absolute(&a.file)
        .ok()
        .and_then(|p| p.parent().map(|d| d.display().to_string()));
    let mut host_env = std::collections::BTreeMap::new();
    // A spec that does not parse is sent anyway: the daemon reports its errors.
    if let Ok(spec) = zlayer_spec::parse_str(&source, &a.file.display().to_string()) {
        for var in zlayer_agent::services::deploy::referenced_host_vars(&spec) {
            if let Ok(v) = std::env::var(&var) {
                host_env.insert(var, v);
            }
        }
    }
    let req = DeployRequest {
        source,
        file: a.file.display().to_string(),
        base_dir,
        host_env,
        dry_run: a.dry_run,
    };
    let resp: DeployResponse = client.post("/v1/deployments", &req).await?;
    out!("{}", resp.summary);
    if a.dry_run {
        outln!("(dry run: nothing changed)");
    } else if resp.applied {
        outln!("deployment {} applied", resp.plan.deployment);
    } else {
        outln!("deployment {} unchanged", resp.plan.deployment);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn undeploy(client: &Client, a: UndeployArgs) -> CmdResult {
    let r: UndeployResponse = client
        .delete(&format!("/v1/deployments/{}", a.name))
        .await?;
    outln!(
        "deployment {} removed ({} containers)",
        r.deployment,
        r.removed
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn services(client: &Client, a: ServicesArgs) -> CmdResult {
    let list: Vec<ServiceInfo> = client.get("/v1/services").await?;
    if a.format == Format::Json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|s| {
            let last = s
                .runs
                .first()
                .map(|r| match r.exit_code {
                    Some(c) => format!("run {}: exit {c}", r.run),
                    None => format!("run {}: {}", r.run, r.state),
                })
                .unwrap_or_default();
            let mut detail = s.message.clone();
            if !last.is_empty() {
                detail = if detail.is_empty() {
                    last
                } else {
                    format!("{detail}; {last}")
                };
            }
            vec![
                format!("{}/{}", s.deployment, s.service),
                s.kind.to_string(),
                format!("{}/{}", s.running, s.desired),
                s.healthy.to_string(),
                s.restarts.to_string(),
                s.state,
                s.ports.join(", "),
                detail,
            ]
        })
        .collect();
    print_table(
        &[
            "SERVICE", "KIND", "RUNNING", "HEALTHY", "RESTARTS", "STATE", "PORTS", "DETAIL",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn scale(client: &Client, a: ScaleArgs) -> CmdResult {
    let r: ScaleResponse = client
        .post(
            "/v1/services/scale",
            &ScaleRequest {
                service: a.service,
                replicas: a.replicas,
            },
        )
        .await?;
    outln!(
        "{}/{} scaled {} -> {}",
        r.deployment,
        r.service,
        r.from,
        r.to
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn events(client: &Client) -> CmdResult {
    use std::io::Write;
    client
        .stream::<(), Event>(Method::GET, "/v1/events", None, |ev| {
            let mut out = std::io::stdout().lock();
            // A closed stdout (`events | head`) ends the stream quietly.
            let line = serde_json::to_string(&ev).unwrap_or_default();
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                std::process::exit(0);
            }
            Ok(())
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}
