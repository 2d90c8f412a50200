//! The operations behind `deploy`, `undeploy`, `scale` and `services`: they change the desired
//! state in the database and wake the supervisor, which does the work.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zlayer_spec::{Deployment, Kind, Plan, Service};

use super::events::Event;
use super::store::{DeploymentRecord, RunRecord};
use crate::error::{AgentError, Result};
use crate::Agent;

/// `POST /v1/deployments`: the YAML text as the client read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DeployRequest {
    /// The spec file's text.
    pub source: String,
    /// The file name as the user gave it (used in error messages: `demo.yaml:12:7: ...`).
    pub file: String,
    /// The file's directory (absolute), against which relative `env_file`, secret and bind
    /// paths are resolved.
    pub base_dir: Option<String>,
    /// Values of the host variables the spec references with `from_host`, taken from the
    /// deploying client's environment (only those that are referenced).
    pub host_env: BTreeMap<String, String>,
    /// Only compute and return the plan.
    pub dry_run: bool,
}

/// What `deploy` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployResponse {
    pub plan: Plan,
    /// The plan in words (one line per service).
    pub summary: String,
    pub applied: bool,
}

/// One row of `services`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceInfo {
    pub deployment: String,
    pub service: String,
    pub kind: Kind,
    pub image: String,
    /// Desired replicas (services), 1 for jobs, 0 for cron.
    pub desired: u32,
    pub running: u32,
    /// Running replicas that pass their health check (all running ones without a check).
    pub healthy: u32,
    pub restarts: u64,
    /// `running`, `starting`, `rolling`, `rollout-failed`, `crash-loop`, `waiting`, `error`,
    /// `completed`, `failed`, `scheduled`.
    pub state: String,
    /// Why it is in that state, when there is something to say.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Jobs and cron: the last runs, newest first, with exit codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunRecord>,
    /// Cron: the next fire time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// Host ports the service publishes right now (`0.0.0.0:8080->80/tcp`, docker's form).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

fn spec_err(e: zlayer_spec::SpecErrors) -> AgentError {
    AgentError::invalid(e.to_string())
}

/// Checks the deployment's published ports against this node: another deployment's service,
/// a `run -p` container, or another process holding the port is an error at the line of the
/// `publish`. (Ports published twice within the file are caught by the spec's validation.)
/// Every service's `image` must be a reference the puller can parse (a digest such as
/// `busybox@sha256:zzz` is refused now, also for `--dry-run`, not when the first replica
/// starts), and its `cpu` must fit this node.
fn check_images_and_cpus(d: &Deployment, file: &str, map: &zlayer_spec::SourceMap) -> Result<()> {
    let mut problems = Vec::new();
    for (name, s) in &d.services {
        let at = |field: &str| {
            map.locate(&format!("services.{name}.{field}"))
                .map(|l| format!("{file}:{l}"))
                .unwrap_or_else(|| file.to_string())
        };
        if let Err(e) = zlayer_image::Reference::parse(&s.image.name) {
            problems.push(format!("{}: service \"{name}\": {e}", at("image")));
        }
        // Targets the runtime mounts itself (/proc, /sys, /) cannot be replaced.
        let storage = s.storage.iter().map(|m| ("storage", m.target()));
        let secrets = s.secrets.iter().map(|m| ("secrets", m.target.as_str()));
        for (i, (field, target)) in storage.chain(secrets).enumerate() {
            let index = if field == "storage" {
                i
            } else {
                i - s.storage.len()
            };
            if let Err(e) = zlayer_runtime::validate::mount_target(field, target) {
                let place = at(&format!("{field}[{index}].target"));
                problems.push(format!("{place}: service \"{name}\": {e}"));
            }
        }
        // Node-specific, so not in zlayer-spec's checks: a quota above the node's CPUs would
        // make every replica's start fail (docker refuses it the same way).
        if let Some(cpu) = s.resources.cpu {
            use zlayer_runtime::validate;
            if let Err(e) = validate::cpus(cpu.cpus(), validate::host_cpus()) {
                problems.push(format!(
                    "{}: `cpu` in service \"{name}\": {e}",
                    at("resources.cpu")
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AgentError::invalid(problems.join("\n")))
    }
}

fn check_published_ports(
    agent: &Agent,
    d: &Deployment,
    others: &[DeploymentRecord],
    file: &str,
    map: &zlayer_spec::SourceMap,
) -> Result<()> {
    let mut problems = Vec::new();
    for (name, s) in &d.services {
        for (i, e) in s.endpoints.iter().enumerate() {
            let Some(port) = e.publish else { continue };
            let at = map
                .locate(&format!("services.{name}.endpoints[{i}].publish"))
                .map(|l| format!("{file}:{l}"))
                .unwrap_or_else(|| file.to_string());
            let what = format!(
                "{at}: service \"{name}\" cannot publish host port {port}/{}",
                e.protocol
            );
            let other = others
                .iter()
                .filter(|o| o.spec.deployment != d.deployment)
                .find_map(|o| {
                    o.spec.services.iter().find_map(|(sn, os)| {
                        os.endpoints
                            .iter()
                            .any(|oe| oe.publish == Some(port) && oe.protocol == e.protocol)
                            .then(|| {
                                format!("{}/{sn} (deployed from {})", o.spec.deployment, o.file)
                            })
                    })
                });
            if let Some(owner) = other {
                problems.push(format!(
                    "{what}: it is already published by service {owner}"
                ));
                continue;
            }
            if let Some(owner) = agent.run_container_publishing(port, e.protocol) {
                problems.push(format!("{what}: it is already published by {owner}"));
                continue;
            }
            if agent
                .services()
                .published
                .owner_of(port, e.protocol)
                .is_none()
            {
                let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
                let taken = match e.protocol {
                    zlayer_spec::Protocol::Tcp => std::net::TcpListener::bind(addr).err(),
                    zlayer_spec::Protocol::Udp => std::net::UdpSocket::bind(addr).err(),
                };
                if let Some(err) = taken.filter(|err| err.kind() == std::io::ErrorKind::AddrInUse) {
                    problems.push(format!(
                        "{what}: another process on this node listens on it ({err})"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AgentError::conflict(problems.join("\n")))
    }
}

/// Refuses a deployment whose replicas, with those of the other deployments, exceed the node's
/// `limits.max_replicas`; the error points at the largest service's `replicas`. Checked before
/// anything is stored, so nothing is allocated or started for a request that cannot run.
fn check_replica_limit(
    d: &Deployment,
    others: &[DeploymentRecord],
    max: usize,
    file: &str,
    map: &zlayer_spec::SourceMap,
) -> Result<()> {
    let held: usize = others
        .iter()
        .filter(|o| o.spec.deployment != d.deployment)
        .map(|o| crate::limits::replicas_of_deployment(&o.spec))
        .sum();
    let asked = crate::limits::replicas_of_deployment(d);
    let what = match d
        .services
        .iter()
        .max_by_key(|(_, s)| crate::limits::replicas_of(s))
    {
        Some((name, _)) => {
            let at = map
                .locate(&format!("services.{name}.replicas"))
                .map(|l| format!("{file}:{l}"))
                .unwrap_or_else(|| file.to_string());
            format!(
                "{at}: deployment \"{}\" (largest: service \"{name}\") asks for",
                d.deployment
            )
        }
        None => format!("{file}: deployment \"{}\" asks for", d.deployment),
    };
    crate::limits::check_replicas(asked, held, max, &what)
}

/// Resolves each service's environment: env files (read here, on the node), then `env`, with
/// `from_host` values from the client.
fn resolve_env(
    d: &Deployment,
    host_env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut out = BTreeMap::new();
    for (name, s) in &d.services {
        let mut files = Vec::new();
        for f in &s.env_file {
            files.push(std::fs::read_to_string(f).map_err(|e| {
                AgentError::invalid(format!("service \"{name}\": env_file {f}: {e}"))
            })?);
        }
        let env = s
            .resolve_env(&files, |v| host_env.get(v).cloned())
            .map_err(|e| AgentError::invalid(format!("service \"{name}\": {e}")))?;
        for sec in &s.secrets {
            if !Path::new(&sec.source).is_file() {
                return Err(AgentError::invalid(format!(
                    "service \"{name}\": secret \"{}\": {} is not a readable file",
                    sec.name, sec.source
                )));
            }
        }
        out.insert(name.clone(), env);
    }
    Ok(out)
}

/// The host variables a spec references with `from_host` (the client sends only these).
pub fn referenced_host_vars(d: &Deployment) -> Vec<String> {
    let mut v: Vec<String> = d
        .services
        .values()
        .flat_map(|s| s.env.values())
        .filter_map(|e| match e {
            zlayer_spec::EnvValue::FromHost { from_host } => Some(from_host.clone()),
            zlayer_spec::EnvValue::Literal(_) => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The plan in words.
pub fn describe_plan(p: &Plan) -> String {
    use zlayer_spec::Action;
    let mut out = String::new();
    for s in &p.services {
        let what = match &s.action {
            Action::Create { replicas } => match s.kind {
                Kind::Service => format!("create ({replicas} replicas)"),
                Kind::Job => "create (run once)".into(),
                Kind::Cron => "create (schedule)".into(),
            },
            Action::Update {
                changed,
                replace,
                scale,
            } => {
                let mut parts = vec![format!("update: {}", changed.join(", "))];
                if *replace {
                    parts.push(match s.kind {
                        Kind::Service => "rolling update".into(),
                        Kind::Job => "run again".into(),
                        Kind::Cron => "new runs use the new spec".into(),
                    });
                }
                if let Some((a, b)) = scale {
                    parts.push(format!("scale {a} -> {b}"));
                }
                parts.join("; ")
            }
            Action::Remove => "remove".into(),
            Action::Unchanged => "unchanged".into(),
        };
        out.push_str(&format!(
            "{}/{} ({}): {what}\n",
            p.deployment, s.name, s.kind
        ));
    }
    out
}

impl Agent {
    /// `deploy`: parses and validates the spec (errors carry `file:line:col`), computes the
    /// plan against what is deployed, and (unless `dry_run`) stores it as the desired state.
    /// Deploying the same file again changes nothing.
    pub(crate) fn deploy_blocking(&self, req: DeployRequest) -> Result<DeployResponse> {
        let file = if req.file.is_empty() {
            "deployment.yaml"
        } else {
            &req.file
        };
        let (mut spec, map) =
            zlayer_spec::parse_str_with_map(&req.source, file).map_err(spec_err)?;
        if let Some(base) = &req.base_dir {
            spec.resolve_relative_paths(Path::new(base));
        }
        check_images_and_cpus(&spec, file, &map)?;
        let store = &self.services().store;
        let deployed = store.list_deployments()?;
        check_replica_limit(
            &spec,
            &deployed,
            self.config().file.limits.max_replicas,
            file,
            &map,
        )?;
        check_published_ports(self, &spec, &deployed, file, &map)?;
        let env = resolve_env(&spec, &req.host_env)?;
        let current = store.get_deployment(&spec.deployment)?;
        // `scale` changes the stored replica count; a deploy of the file sets it back.
        let plan = zlayer_spec::plan(&spec, current.as_ref().map(|c| &c.spec));
        let env_changed = current.as_ref().is_some_and(|c| c.env != env);
        let summary = describe_plan(&plan);
        let applied = !req.dry_run && (!plan.is_noop() || env_changed);
        if applied {
            store.put_deployment(&DeploymentRecord {
                spec: spec.clone(),
                source: req.source.clone(),
                file: file.to_string(),
                env,
                deployed_at: chrono::Utc::now().to_rfc3339(),
            })?;
            for s in &plan.services {
                if let zlayer_spec::Action::Update { replace: true, .. } = s.action {
                    // A new version gets a fresh chance even if the previous rollout failed.
                    let key = super::key::ServiceKey::new(&spec.deployment, &s.name);
                    store.update_facts(&key, |f| f.failed_hash = None)?;
                }
            }
            // Until the supervisor's next pass, `services` says the change is pending.
            self.services()
                .views
                .lock()
                .retain(|k, _| k.deployment != spec.deployment);
            self.services().events.publish(Event::new(
                "deployment",
                "deployed",
                &spec.deployment,
                &spec.deployment,
            ));
            self.services().wake();
        }
        Ok(DeployResponse {
            plan,
            summary,
            applied,
        })
    }

    /// `undeploy NAME`: forgets the deployment and stops and removes all its containers.
    pub async fn undeploy(self: &Arc<Self>, name: &str) -> Result<usize> {
        if !self.services().store.delete_deployment(name)? {
            return Err(AgentError::not_found(format!(
                "no deployment named {name:?}"
            )));
        }
        // First end every task of the deployment (a pass may be starting a cron run, a job
        // retry or a restart right now), then remove what exists: nothing can start after.
        self.services().stop_tasks(name).await;
        let ids: Vec<String> = self
            .containers()
            .list()?
            .into_iter()
            .filter(|r| r.labels.get(super::labels::DEPLOYMENT).map(String::as_str) == Some(name))
            .map(|r| r.id)
            .collect();
        let n = ids.len();
        // Names and published ports go first, so nothing new reaches replicas that stop.
        self.remove_dns_deployment(name);
        self.services().published.remove_deployment(name);
        self.remove_replicas(ids).await;
        self.services()
            .events
            .publish(Event::new("deployment", "undeployed", name, name).with("containers", n));
        Ok(n)
    }

    /// Finds a service by `deployment/service` or by a service name unique across deployments.
    pub fn find_service(&self, key: &str) -> Result<(DeploymentRecord, String)> {
        let all = self.services().store.list_deployments()?;
        if let Some((d, s)) = key.split_once('/') {
            let rec = all
                .into_iter()
                .find(|r| r.spec.deployment == d)
                .ok_or_else(|| AgentError::not_found(format!("no deployment named {d:?}")))?;
            if !rec.spec.services.contains_key(s) {
                return Err(AgentError::not_found(format!(
                    "deployment {d:?} has no service {s:?}"
                )));
            }
            return Ok((rec, s.to_string()));
        }
        let mut hits: Vec<DeploymentRecord> = all
            .into_iter()
            .filter(|r| r.spec.services.contains_key(key))
            .collect();
        match hits.len() {
            0 => Err(AgentError::not_found(format!("no service named {key:?}"))),
            1 => Ok((hits.remove(0), key.to_string())),
            _ => Err(AgentError::invalid(format!(
                "service name {key:?} is ambiguous: use one of {}",
                hits.iter()
                    .map(|r| format!("{}/{key}", r.spec.deployment))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// `scale SERVICE N`.
    pub(crate) fn scale_blocking(&self, key: &str, replicas: u32) -> Result<(String, String, u32)> {
        let (mut rec, name) = self.find_service(key)?;
        let svc: &mut Service = rec
            .spec
            .services
            .get_mut(&name)
            .ok_or_else(|| AgentError::not_found(format!("no service named {key:?}")))?;
        if svc.kind != Kind::Service {
            return Err(AgentError::invalid(format!(
                "{}/{name} is a {}: only services have replicas",
                rec.spec.deployment, svc.kind
            )));
        }
        let before = svc.desired_replicas();
        svc.replicas = Some(replicas);
        let held: usize = self
            .services()
            .store
            .list_deployments()?
            .iter()
            .filter(|o| o.spec.deployment != rec.spec.deployment)
            .map(|o| crate::limits::replicas_of_deployment(&o.spec))
            .sum();
        let rest: usize = rec
            .spec
            .services
            .iter()
            .filter(|(n, _)| **n != name)
            .map(|(_, s)| crate::limits::replicas_of(s))
            .sum();
        crate::limits::check_replicas(
            replicas as usize,
            held + rest,
            self.config().file.limits.max_replicas,
            &format!("scale {}/{name}", rec.spec.deployment),
        )?;
        self.services().store.put_deployment(&rec)?;
        self.services().wake();
        Ok((rec.spec.deployment.clone(), name, before))
    }
}
