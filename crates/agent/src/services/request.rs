//! Spec to container request: what one replica (or run) of a service is asked to be. Pure
//! apart from the random name suffix, so the mapping of every spec field is in one place.

use std::collections::BTreeMap;

use zlayer_spec::{Mount, Network, PullPolicy, Service};

use super::key::ServiceKey;
use super::labels::Owner;
use crate::containers::CreateRequest;
use crate::error::Result;

/// The replica hash: the spec's container hash plus the resolved environment (so a changed
/// env file or host variable rolls the replicas too).
pub fn replica_hash(svc: &Service, env: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(svc.spec_hash().as_bytes());
    h.update(serde_json::to_vec(env).unwrap_or_default());
    format!("{:x}", h.finalize())[..16].to_string()
}

/// The container request of one replica (or run) of `svc`.
pub fn build_request(
    key: &ServiceKey,
    svc: &Service,
    env: &BTreeMap<String, String>,
    owner: &Owner,
) -> Result<CreateRequest> {
    let (volumes, tmpfs) = mounts(svc);
    let suffix = crate::containers::names::new_id()?;
    let deployment = &key.deployment;
    Ok(CreateRequest {
        image: svc.image.name.clone(),
        name: Some(format!(
            "{deployment}-{}-{}-{}",
            key.service,
            owner.replica,
            &suffix[..6]
        )),
        cmd: svc.command.args.clone().unwrap_or_default(),
        entrypoint: svc.command.entrypoint.clone(),
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        user: svc.user.clone(),
        workdir: svc.command.workdir.clone(),
        hostname: svc.hostname.clone(),
        memory: svc.resources.memory.map(|m| m.bytes() as i64),
        cpus: svc.resources.cpu.map(|c| c.cpus()),
        pids_limit: svc.resources.pids.map(|p| p as i64),
        volumes,
        tmpfs,
        network: Some(match &svc.network {
            Network::Host => "host".into(),
            Network::None => "none".into(),
            other => other.as_str().to_string(),
        }),
        // On a bridge network `db` then resolves to this deployment's `db.<deployment>` first.
        dns_search: match &svc.network {
            Network::Bridge | Network::Named(_) => vec![deployment.to_string()],
            Network::Host | Network::None => Vec::new(),
        },
        labels: owner.to_labels(),
        pull: Some(pull_policy(svc.image.pull_policy).into()),
        ..CreateRequest::default()
    })
}

/// The `-v` and `--tmpfs` values of a service's storage and secrets.
fn mounts(svc: &Service) -> (Vec<String>, Vec<String>) {
    let ro = |readonly: bool| if readonly { ":ro" } else { "" };
    let mut volumes = Vec::new();
    let mut tmpfs = Vec::new();
    for m in &svc.storage {
        match m {
            Mount::Named {
                name,
                target,
                readonly,
            } => volumes.push(format!("{name}:{target}{}", ro(*readonly))),
            Mount::Bind {
                source,
                target,
                readonly,
            } => volumes.push(format!("{source}:{target}{}", ro(*readonly))),
            Mount::Tmpfs { target, size } => tmpfs.push(match size {
                Some(s) => format!("{target}:size={}", s.bytes()),
                None => target.clone(),
            }),
        }
    }
    // Secrets: the file mounted read-only; its content never enters the request or a record.
    for s in &svc.secrets {
        volumes.push(format!("{}:{}:ro", s.source, s.target));
    }
    (volumes, tmpfs)
}

/// The `--pull` value of a spec's pull policy.
fn pull_policy(p: PullPolicy) -> &'static str {
    match p {
        PullPolicy::Always => "always",
        PullPolicy::IfNotPresent => "missing",
        PullPolicy::Never => "never",
    }
}
