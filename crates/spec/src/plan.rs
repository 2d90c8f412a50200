//! What `deploy` would change: a pure diff between the desired and the current deployment, and
//! the spec hash that tells the supervisor which replicas run an outdated container spec.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::model::{Deployment, Kind, Service};

/// Top-level service fields whose change needs new containers (a rolling update). Everything
/// else is applied by the supervisor without touching running replicas (`replicas` only scales).
pub const CONTAINER_FIELDS: &[&str] = &[
    "kind",
    "image",
    "command",
    "env",
    "env_file",
    "secrets",
    "resources",
    "endpoints",
    "storage",
    "user",
    "hostname",
    "network",
];

#[derive(Serialize)]
struct HashInput<'a> {
    format: &'static str,
    kind: Kind,
    image: &'a str,
    command: &'a crate::model::Command,
    env: &'a std::collections::BTreeMap<String, crate::model::EnvValue>,
    env_file: &'a [String],
    secrets: &'a [crate::model::Secret],
    resources: &'a crate::model::Resources,
    endpoints: &'a [crate::model::Endpoint],
    storage: &'a [crate::model::Mount],
    user: &'a Option<String>,
    hostname: &'a Option<String>,
    network: &'a crate::model::Network,
}

impl Service {
    /// A stable hash (`sha256:<hex>`) of the fields that shape a container ([`CONTAINER_FIELDS`],
    /// with the image by name only). Replicas started from a spec with another hash are outdated
    /// and get replaced by a rolling update; replica count, health, restart and scheduling
    /// settings do not change it.
    ///
    /// It hashes the spec, not what it points to: the content of `env_file`s, secret files and
    /// `from_host` variables, and the digest behind a tag, are the agent's to mix in if it wants
    /// changes there to roll replicas.
    pub fn spec_hash(&self) -> String {
        let input = HashInput {
            format: "zlayer-spec-hash-v1",
            kind: self.kind,
            image: &self.image.name,
            command: &self.command,
            env: &self.env,
            env_file: &self.env_file,
            secrets: &self.secrets,
            resources: &self.resources,
            endpoints: &self.endpoints,
            storage: &self.storage,
            user: &self.user,
            hostname: &self.hostname,
            network: &self.network,
        };
        // Struct fields serialize in declaration order and maps are BTreeMaps, so the JSON is
        // canonical; serializing plain data to a Vec cannot fail.
        let json = serde_json::to_vec(&input).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&json)))
    }
}

/// What happens to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// New service: create `replicas` replicas (jobs run, cron entries get scheduled).
    Create {
        /// Replicas to start.
        replicas: u32,
    },
    /// Existing service with changes.
    Update {
        /// Changed top-level fields (`image.pull_policy` is listed on its own), sorted.
        changed: Vec<String>,
        /// Whether replicas must be replaced (rolling update / job re-run).
        replace: bool,
        /// `(from, to)` when the replica count changes.
        #[schema(value_type = Option<Vec<u32>>)]
        scale: Option<(u32, u32)>,
    },
    /// Service no longer declared: stop and remove its replicas.
    Remove,
    /// Nothing to do.
    Unchanged,
}

/// The plan for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServicePlan {
    /// Service name.
    pub name: String,
    /// Its kind (the desired one; the current one for removals).
    pub kind: Kind,
    /// What happens.
    pub action: Action,
}

/// Everything a deploy would do, service by service (sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    /// The deployment's name.
    pub deployment: String,
    /// Per-service actions.
    pub services: Vec<ServicePlan>,
}

impl Plan {
    /// True when the deploy would change nothing (deploying the same file again).
    pub fn is_noop(&self) -> bool {
        self.services.iter().all(|s| s.action == Action::Unchanged)
    }

    fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.services.iter().filter(|s| f(&s.action)).count()
    }
}

/// The fields of `desired` that differ from `current`.
fn changed_fields(desired: &Service, current: &Service) -> Vec<String> {
    let to_obj = |s: &Service| match serde_json::to_value(s) {
        Ok(Json::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (to_obj(desired), to_obj(current));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changed = Vec::new();
    for k in keys {
        if k == "image" {
            if desired.image.name != current.image.name {
                changed.push("image".to_owned());
            }
            if desired.image.pull_policy != current.image.pull_policy {
                changed.push("image.pull_policy".to_owned());
            }
        } else if a.get(k) != b.get(k) {
            changed.push(k.clone());
        }
    }
    changed
}

/// Computes what deploying `desired` over `current` (the deployment of the same name as stored
/// by the agent, if any) would do.
pub fn plan(desired: &Deployment, current: Option<&Deployment>) -> Plan {
    let mut services = Vec::new();
    for (name, want) in &desired.services {
        let action = match current.and_then(|c| c.services.get(name)) {
            None => Action::Create {
                replicas: want.desired_replicas(),
            },
            Some(have) => {
                let changed = changed_fields(want, have);
                if changed.is_empty() {
                    Action::Unchanged
                } else {
                    let replace = want.spec_hash() != have.spec_hash();
                    let (from, to) = (have.desired_replicas(), want.desired_replicas());
                    Action::Update {
                        changed,
                        replace,
                        scale: (from != to).then_some((from, to)),
                    }
                }
            }
        };
        services.push(ServicePlan {
            name: name.clone(),
            kind: want.kind,
            action,
        });
    }
    if let Some(cur) = current {
        for (name, have) in &cur.services {
            if !desired.services.contains_key(name) {
                services.push(ServicePlan {
                    name: name.clone(),
                    kind: have.kind,
                    action: Action::Remove,
                });
            }
        }
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Plan {
        deployment: desired.deployment.clone(),
        services,
    }
}

impl fmt::Display for Plan {
    /// One summary line, then one line per service:
    /// `+` create, `~` update, `-` remove, `=` unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "deployment \"{}\": {} to create, {} to update, {} to remove, {} unchanged",
            self.deployment,
            self.count(|a| matches!(a, Action::Create { .. })),
            self.count(|a| matches!(a, Action::Update { .. })),
            self.count(|a| matches!(a, Action::Remove)),
            self.count(|a| matches!(a, Action::Unchanged)),
        )?;
        for s in &self.services {
            let name = &s.name;
            let kind = s.kind;
            match &s.action {
                Action::Create { replicas } => match kind {
                    Kind::Service => writeln!(
                        f,
                        "  + {name} (service): create {replicas} replica{}",
                        if *replicas == 1 { "" } else { "s" }
                    )?,
                    Kind::Job => writeln!(f, "  + {name} (job): run")?,
                    Kind::Cron => writeln!(f, "  + {name} (cron): schedule")?,
                },
                Action::Update {
                    changed,
                    replace,
                    scale,
                } => {
                    let mut parts = Vec::new();
                    if *replace {
                        parts.push(match kind {
                            Kind::Service => "rolling update".to_owned(),
                            Kind::Job => "run again".to_owned(),
                            Kind::Cron => "next runs use the new spec".to_owned(),
                        });
                    }
                    if let Some((from, to)) = scale {
                        parts.push(format!("scale {from} -> {to}"));
                    }
                    if parts.is_empty() {
                        parts.push("update settings, running replicas kept".to_owned());
                    }
                    writeln!(
                        f,
                        "  ~ {name} ({kind}): {} (changed: {})",
                        parts.join(", "),
                        changed.join(", ")
                    )?;
                }
                Action::Remove => writeln!(f, "  - {name} ({kind}): remove")?,
                Action::Unchanged => writeln!(f, "  = {name} ({kind}): unchanged")?,
            }
        }
        Ok(())
    }
}
