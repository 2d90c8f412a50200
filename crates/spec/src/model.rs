//! The deployment spec types: what a `deployment.yaml` declares.
//!
//! These types are plain data. YAML is decoded into them by [`crate::decode`] (with positions for
//! errors); they also derive serde so the agent can store them and pass them over its API as JSON in
//! the same shape as the YAML. Defaults are filled in by the decoder, so every value here is the
//! effective one; fields that only apply to one kind are `Option`s and `None` for other kinds.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cron::Schedule;
use crate::units::{ByteSize, Cpu, HumanDuration};

/// A whole spec file: one named deployment of several services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Format version; only `v1` exists.
    pub version: String,
    /// Deployment name (DNS label). `undeploy NAME` removes everything it declared.
    pub deployment: String,
    /// Services by name (DNS labels), sorted by name.
    pub services: BTreeMap<String, Service>,
}

/// What a service entry is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Long-running, kept at `replicas` copies (the default).
    #[default]
    Service,
    /// Runs to completion once per deploy, retried on failure.
    Job,
    /// A job started on a schedule.
    Cron,
}

impl Kind {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Job => "job",
            Kind::Cron => "cron",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `services:`. See `docs/spec.md` for the YAML form of every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `service` (default), `job` or `cron`.
    #[serde(default)]
    pub kind: Kind,
    /// Image to run.
    pub image: Image,
    /// Entrypoint/args/workdir overrides; unset parts come from the image config.
    #[serde(default)]
    pub command: Command,
    /// Environment variables, applied after `env_file` (so these win).
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// Files of `KEY=VALUE` lines (docker `--env-file` format, see [`crate::parse_env_file`]),
    /// read by the agent at deploy time, in order. Relative paths are relative to the spec file.
    #[serde(default)]
    pub env_file: Vec<String>,
    /// Secret files mounted read-only into the container.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Resource limits; unset = unlimited.
    #[serde(default)]
    pub resources: Resources,
    /// Desired copies of a `service` (default 1). `None` for jobs and cron entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Ports the service listens on, optionally published on the host.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Health check (services only). `None` = a running process counts as healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Restart policy and backoff (services only). `None` for jobs and cron entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// Services that must reach a condition before this one starts.
    #[serde(default)]
    pub depends: Vec<Dependency>,
    /// Steps run, in order, before the container starts.
    #[serde(default)]
    pub init: Vec<InitStep>,
    /// Volumes, bind mounts and tmpfs mounts.
    #[serde(default)]
    pub storage: Vec<Mount>,
    /// `user`, `uid`, `user:group` or `uid:gid`; unset = the image's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Container hostname; unset = the replica's container name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Network mode (default `bridge`).
    #[serde(default)]
    pub network: Network,
    /// Rolling update knobs (services only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// Job/cron: re-runs after a failed run (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Job/cron: delay between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Job/cron: a run that takes longer is killed and counts as failed. `None` = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Cron: when to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Cron: what to do when a run is due while the previous one still runs (default `forbid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Cron: how many finished runs (with exit codes) to keep (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<u32>,
}

/// The image of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Image reference, e.g. `zlayer.local/demo/busybox:latest`.
    pub name: String,
    /// When to contact the registry (default `if_not_present`).
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

/// When to pull an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Resolve the reference at the registry on every deploy.
    Always,
    /// Pull only if the image is not in the local store (default, like Docker).
    #[default]
    IfNotPresent,
    /// Never pull; the image must have been pulled or loaded before.
    Never,
}

/// Overrides of the image's entrypoint, cmd and working directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Replaces the image's ENTRYPOINT (and, like Docker, drops its CMD unless `args` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

/// The value of one environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// Written in the spec.
    Literal(String),
    /// Copied from the environment of the process that deploys (`{from_host: VAR}`); an unset
    /// host variable is a deploy error, so nothing is silently empty.
    FromHost {
        /// The host variable's name.
        from_host: String,
    },
}

/// A secret file mounted read-only at `target`.
///
/// The spec holds only where the secret comes from; its content is read by the agent at deploy
/// time and should be held in a [`SecretBytes`], which never prints its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Name (DNS label), unique within the service.
    pub name: String,
    /// File on the host with the content. Relative paths are relative to the spec file.
    pub source: String,
    /// Absolute path in the container; default `/run/secrets/NAME`.
    pub target: String,
}

/// Secret content that refuses to show itself in `Debug`/`Display` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps secret content.
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    /// The content, for writing into the container's secret mount only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Resource limits of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit (cgroup quota), e.g. `0.5` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Memory limit, e.g. `64Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Maximum number of processes/threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

/// A port the container listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Name (DNS label), unique within the service.
    pub name: String,
    /// Container port.
    pub port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Host port to publish on; `None` = not published. With several replicas the agent
    /// balances across them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<u16>,
}

/// Transport protocol of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Health checking of a service's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// What to probe.
    pub check: HealthCheck,
    /// Time between probes (default 10s).
    pub interval: HumanDuration,
    /// A probe taking longer fails (default 5s).
    pub timeout: HumanDuration,
    /// Consecutive failures before a replica is unhealthy and replaced (default 3).
    pub retries: u32,
    /// After start, failures during this period do not count (default 0s).
    pub start_grace: HumanDuration,
}

/// One kind of health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum HealthCheck {
    /// Healthy when a TCP connection to the replica's `port` succeeds.
    Tcp {
        /// Container port.
        port: u16,
    },
    /// Healthy when `GET http://REPLICA:port/path` answers with `status` (default: any 2xx/3xx).
    Http {
        /// Container port.
        port: u16,
        /// Request path (default `/`).
        path: String,
        /// Required status code; `None` = 200-399.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    /// Healthy when the command, executed inside the container, exits 0.
    Command {
        /// argv, not a shell string; use `[sh, -c, "..."]` for shell syntax.
        command: Vec<String>,
    },
}

/// Restart behaviour of a service's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// When to restart an exited replica (default `always`).
    pub policy: RestartPolicy,
    /// Delay between restarts.
    pub backoff: Backoff,
}

/// When a replica that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    Never,
    /// Restart only after a non-zero exit or a kill by a signal.
    OnFailure,
    /// Always restart (default for services).
    #[default]
    Always,
}

impl RestartPolicy {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// Exponential backoff: `initial`, doubled per consecutive failure up to `max`; reset to
/// `initial` once a replica has run `reset_after` without failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// First delay (default 1s).
    pub initial: HumanDuration,
    /// Upper bound (default 5m, like Kubernetes' crash-loop backoff).
    pub max: HumanDuration,
    /// Stable run time after which the delay resets (default 10m).
    pub reset_after: HumanDuration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: HumanDuration::secs(1),
            max: HumanDuration::secs(300),
            reset_after: HumanDuration::secs(600),
        }
    }
}

impl Backoff {
    /// The delay before restart number `failures` (1-based): `initial * 2^(failures-1)`, capped.
    pub fn delay(&self, failures: u32) -> std::time::Duration {
        let exp = failures.saturating_sub(1).min(32);
        let d = self.initial.0.saturating_mul(1u32 << exp.min(31));
        d.min(self.max.0)
    }
}

/// A dependency on another service of the same deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// The other service's name.
    pub service: String,
    /// What it must reach (default `started`).
    pub condition: Condition,
    /// How long to wait before this service's start fails (default 5m).
    pub timeout: HumanDuration,
}

/// The state a dependency must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// At least one replica is running (default).
    #[default]
    Started,
    /// At least one replica passes its health check.
    Healthy,
    /// The job finished with exit code 0 (jobs only).
    Completed,
}

impl Condition {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }
}

/// One init step, run before the service's container starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitStep {
    /// What to do.
    #[serde(flatten)]
    pub action: InitAction,
    /// What a failed step means (default `fail`).
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// The action of an init step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitAction {
    /// Wait until a TCP connection to `host:port` succeeds.
    WaitTcp {
        /// Host name or address (another service's name resolves via the agent's DNS).
        host: String,
        /// Port.
        port: u16,
        /// Give up after (default 60s).
        timeout: HumanDuration,
    },
    /// Wait until `GET url` answers 2xx/3xx.
    WaitHttp {
        /// `http://` URL.
        url: String,
        /// Give up after (default 60s).
        timeout: HumanDuration,
    },
    /// Run a one-shot container from the service's image with this argv; exit 0 = success.
    Run {
        /// argv.
        command: Vec<String>,
        /// Kill and fail after (default 5m).
        timeout: HumanDuration,
    },
}

impl InitAction {
    /// The step's key in the spec (`wait_tcp`, `wait_http`, `run`).
    pub fn name(&self) -> &'static str {
        match self {
            InitAction::WaitTcp { .. } => "wait_tcp",
            InitAction::WaitHttp { .. } => "wait_http",
            InitAction::Run { .. } => "run",
        }
    }
}

/// What a failed init step means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The replica fails to start (and is retried with the restart backoff). Default.
    #[default]
    Fail,
    /// Log it and go on with the next step.
    Continue,
}

/// A mount in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Mount {
    /// A named volume under the agent's root, created on first use, kept across deploys.
    Named {
        /// Volume name (DNS label); shared by every service that names it.
        name: String,
        /// Absolute path in the container.
        target: String,
        /// Mount read-only (default false).
        #[serde(default)]
        readonly: bool,
    },
    /// A host directory or file.
    Bind {
        /// Host path; relative paths are relative to the spec file.
        source: String,
        /// Absolute path in the container.
        target: String,
        /// Mount read-only (default false).
        #[serde(default)]
        readonly: bool,
    },
    /// A memory-backed tmpfs.
    Tmpfs {
        /// Absolute path in the container.
        target: String,
        /// Size limit; `None` = the kernel default (half of RAM).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<ByteSize>,
    },
}

impl Mount {
    /// The container path.
    pub fn target(&self) -> &str {
        match self {
            Mount::Named { target, .. }
            | Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. } => target,
        }
    }
}

/// The network a service's containers join.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Network {
    /// Only loopback.
    None,
    /// The host's network namespace (no isolation; `publish` is meaningless).
    Host,
    /// The agent's default bridge network (default).
    #[default]
    Bridge,
    /// A named network of the agent.
    Named(String),
}

impl Network {
    /// The spelling used in the spec.
    pub fn as_str(&self) -> &str {
        match self {
            Network::None => "none",
            Network::Host => "host",
            Network::Bridge => "bridge",
            Network::Named(n) => n,
        }
    }

    /// Parses the spec spelling; anything else than the three keywords is a network name.
    pub fn parse(s: &str) -> Network {
        match s {
            "none" => Network::None,
            "host" => Network::Host,
            "bridge" => Network::Bridge,
            other => Network::Named(other.to_owned()),
        }
    }
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Network::parse(&String::deserialize(d)?))
    }
}

/// How replicas are replaced when the container-affecting spec changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// Start the new replica before stopping the old one (default), or the reverse.
    pub order: UpdateOrder,
    /// How long a new replica may take to become healthy before the rollout stops (default 60s).
    pub health_timeout: HumanDuration,
}

impl Default for Update {
    fn default() -> Update {
        Update {
            order: UpdateOrder::StartFirst,
            health_timeout: HumanDuration::secs(60),
        }
    }
}

/// Order of operations when replacing one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Start new, wait healthy, stop old (default; no capacity dip).
    #[default]
    StartFirst,
    /// Stop old, then start new (for services that cannot run twice, e.g. a fixed host port).
    StopFirst,
}

/// What a cron entry does when a run is due while the previous one is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Skip the new run (default): runs never overlap.
    #[default]
    Forbid,
    /// Start it anyway.
    Allow,
    /// Kill the running one and start the new one.
    Replace,
}

/// Default health-check timings.
pub mod defaults {
    use crate::units::HumanDuration;
    pub const HEALTH_INTERVAL: HumanDuration = HumanDuration::secs(10);
    pub const HEALTH_TIMEOUT: HumanDuration = HumanDuration::secs(5);
    pub const HEALTH_RETRIES: u32 = 3;
    pub const HEALTH_START_GRACE: HumanDuration = HumanDuration::secs(0);
    pub const DEPENDS_TIMEOUT: HumanDuration = HumanDuration::secs(300);
    pub const WAIT_TIMEOUT: HumanDuration = HumanDuration::secs(60);
    pub const RUN_TIMEOUT: HumanDuration = HumanDuration::secs(300);
    pub const CRON_HISTORY: u32 = 3;
    pub const REPLICAS: u32 = 1;
}

impl Service {
    /// Desired replica count: `replicas` for a service; 1 for jobs and cron (one run at a time
    /// unless `concurrency: allow`).
    pub fn desired_replicas(&self) -> u32 {
        self.replicas.unwrap_or(defaults::REPLICAS)
    }

    /// The effective restart settings: the spec's for a service; `never` (retries are separate)
    /// for jobs and cron entries.
    pub fn effective_restart(&self) -> Restart {
        self.restart.clone().unwrap_or(Restart {
            policy: match self.kind {
                Kind::Service => RestartPolicy::Always,
                Kind::Job | Kind::Cron => RestartPolicy::Never,
            },
            backoff: self.backoff.clone().unwrap_or_default(),
        })
    }
}
