//! Decoding of one service entry and its nested fields (the bulk of the spec format).

use crate::cron::Schedule;
use crate::error::describe;
use crate::model::*;
use crate::units::{ByteSize, Cpu};
use crate::yaml::{Node, Value};

use std::collections::BTreeMap;

use super::{join, Decoder, Obj};

/// The fields a service entry may have.
const SERVICE_FIELDS: &[&str] = &[
    "kind",
    "image",
    "command",
    "env",
    "env_file",
    "secrets",
    "resources",
    "replicas",
    "endpoints",
    "health",
    "restart",
    "depends",
    "init",
    "storage",
    "user",
    "hostname",
    "network",
    "update",
    "retries",
    "backoff",
    "timeout",
    "schedule",
    "concurrency",
    "history",
];

/// Fields that only make sense for some kinds: (field, the kinds that take it, how to say so).
const KIND_ONLY: &[(&str, &[Kind], &str)] = &[
    ("replicas", &[Kind::Service], "kind: service"),
    ("health", &[Kind::Service], "kind: service"),
    (
        "restart",
        &[Kind::Service],
        "kind: service (jobs and cron entries use `retries` and `backoff`)",
    ),
    ("update", &[Kind::Service], "kind: service"),
    (
        "retries",
        &[Kind::Job, Kind::Cron],
        "kind: job or cron (services use `restart`)",
    ),
    (
        "backoff",
        &[Kind::Job, Kind::Cron],
        "kind: job or cron (services use `restart.backoff`)",
    ),
    ("timeout", &[Kind::Job, Kind::Cron], "kind: job or cron"),
    ("schedule", &[Kind::Cron], "kind: cron"),
    ("concurrency", &[Kind::Cron], "kind: cron"),
    ("history", &[Kind::Cron], "kind: cron"),
];

impl Decoder<'_> {
    /// `None` only when the entry is not a mapping or its `kind` is invalid (the kind decides
    /// which other fields are allowed); other failures leave defaults in place (errors recorded).
    pub(super) fn service(&mut self, n: &Node, path: &str) -> Option<Service> {
        let o = self.obj(n, path, SERVICE_FIELDS)?;
        let kind = match o.get("kind") {
            None => Kind::Service,
            Some(k) => match self.choice(k, &o.child("kind"), &["service", "job", "cron"])? {
                "job" => Kind::Job,
                "cron" => Kind::Cron,
                _ => Kind::Service,
            },
        };
        self.fields_of_other_kinds(&o, kind, path);
        let mut s = self.common_fields(&o, kind);
        if kind == Kind::Service {
            self.service_fields(&o, &mut s);
        }
        if matches!(kind, Kind::Job | Kind::Cron) {
            self.run_fields(&o, &mut s);
        }
        if kind == Kind::Cron {
            self.cron_fields(&o, path, &mut s);
        }
        Some(s)
    }

    /// Reports each field written that this kind does not take.
    fn fields_of_other_kinds(&mut self, o: &Obj<'_>, kind: Kind, path: &str) {
        for (key, kinds, what) in KIND_ONLY {
            if o.has(key) && !kinds.contains(&kind) {
                let loc = o.key_loc(key).unwrap_or(o.loc);
                self.err(
                    loc,
                    &o.child(key),
                    format!(
                        "`{key}` in {} only applies to {what}, but this is kind: {kind}",
                        describe(path)
                    ),
                );
            }
        }
    }

    /// The fields every kind has; the kind-specific ones are left unset.
    fn common_fields(&mut self, o: &Obj<'_>, kind: Kind) -> Service {
        let image = self
            .require(o, "image")
            .and_then(|n| self.image(n, &o.child("image")));
        let command = o.get("command").map_or(Some(Command::default()), |n| {
            self.command(n, &o.child("command"))
        });
        let env = o
            .get("env")
            .map(|n| self.env(n, &o.child("env")))
            .unwrap_or_default();
        let env_file = match o.get("env_file") {
            None => Vec::new(),
            Some(n) if matches!(n.value, Value::Scalar { .. }) => {
                self.string(n, &o.child("env_file")).into_iter().collect()
            }
            Some(n) => self.strings(n, &o.child("env_file")).unwrap_or_default(),
        };
        let secrets = self.each(o.get("secrets"), &o.child("secrets"), Self::secret);
        let resources = o.get("resources").map_or(Some(Resources::default()), |n| {
            self.resources(n, &o.child("resources"))
        });
        let endpoints = self.each(o.get("endpoints"), &o.child("endpoints"), Self::endpoint);
        let depends = self.each(o.get("depends"), &o.child("depends"), Self::dependency);
        let init = self.each(o.get("init"), &o.child("init"), Self::init_step);
        let storage = self.each(o.get("storage"), &o.child("storage"), Self::mount);
        let user = o
            .get("user")
            .and_then(|n| self.nonempty_string(n, &o.child("user")));
        let hostname = o
            .get("hostname")
            .and_then(|n| self.nonempty_string(n, &o.child("hostname")));
        let network = o
            .get("network")
            .and_then(|n| self.nonempty_string(n, &o.child("network")))
            .map(|s| Network::parse(&s))
            .unwrap_or_default();

        Service {
            kind,
            image: image.unwrap_or(Image {
                name: String::new(),
                pull_policy: PullPolicy::IfNotPresent,
            }),
            command: command.unwrap_or_default(),
            env,
            env_file,
            secrets: secrets.unwrap_or_default(),
            resources: resources.unwrap_or_default(),
            replicas: None,
            endpoints: endpoints.unwrap_or_default(),
            health: None,
            restart: None,
            depends: depends.unwrap_or_default(),
            init: init.unwrap_or_default(),
            storage: storage.unwrap_or_default(),
            user,
            hostname,
            network,
            update: None,
            retries: None,
            backoff: None,
            timeout: None,
            schedule: None,
            concurrency: None,
            history: None,
        }
    }

    /// `replicas`, `health`, `restart` and `update` of a `kind: service`, with their defaults.
    fn service_fields(&mut self, o: &Obj<'_>, s: &mut Service) {
        s.replicas = o.get("replicas").map_or(Some(defaults::REPLICAS), |n| {
            self.u32(n, &o.child("replicas"))
        });
        s.health = o
            .get("health")
            .and_then(|n| self.health(n, &o.child("health")));
        s.restart = o.get("restart").map_or(
            Some(Restart {
                policy: RestartPolicy::Always,
                backoff: Backoff::default(),
            }),
            |n| self.restart(n, &o.child("restart")),
        );
        s.update = o.get("update").map_or(Some(Update::default()), |n| {
            self.update(n, &o.child("update"))
        });
    }

    /// `retries`, `backoff` and `timeout` of a job or cron entry, with their defaults.
    fn run_fields(&mut self, o: &Obj<'_>, s: &mut Service) {
        s.retries = o
            .get("retries")
            .map_or(Some(0), |n| self.u32(n, &o.child("retries")));
        s.backoff = o.get("backoff").map_or(Some(Backoff::default()), |n| {
            self.backoff(n, &o.child("backoff"))
        });
        s.timeout = o
            .get("timeout")
            .and_then(|n| self.duration(n, &o.child("timeout")));
    }

    /// `schedule` (required), `concurrency` and `history` of a cron entry.
    fn cron_fields(&mut self, o: &Obj<'_>, path: &str, s: &mut Service) {
        s.schedule = match o.get("schedule") {
            Some(n) => self.parsed::<Schedule>(n, &o.child("schedule")),
            None => {
                let loc = o.key_loc("kind").unwrap_or(o.loc);
                self.err(loc, &o.child("schedule"), format!("{} is kind: cron but has no `schedule` (e.g. schedule: \"0 3 * * *\" or \"@hourly\")", describe(path)));
                None
            }
        };
        s.concurrency = match o.get("concurrency") {
            None => Some(Concurrency::Forbid),
            Some(n) => self
                .choice(n, &o.child("concurrency"), &["forbid", "allow", "replace"])
                .map(|c| match c {
                    "allow" => Concurrency::Allow,
                    "replace" => Concurrency::Replace,
                    _ => Concurrency::Forbid,
                }),
        };
        s.history = o.get("history").map_or(Some(defaults::CRON_HISTORY), |n| {
            self.u32(n, &o.child("history"))
        });
    }

    fn image(&mut self, n: &Node, path: &str) -> Option<Image> {
        if let Value::Scalar { .. } = n.value {
            let name = self.nonempty_string(n, path)?;
            return Some(Image {
                name,
                pull_policy: PullPolicy::IfNotPresent,
            });
        }
        let o = self.obj(n, path, &["name", "pull_policy"])?;
        let name = self
            .require(&o, "name")
            .and_then(|n| self.nonempty_string(n, &o.child("name")));
        let pull_policy = match o.get("pull_policy") {
            None => Some(PullPolicy::IfNotPresent),
            Some(p) => self
                .choice(
                    p,
                    &o.child("pull_policy"),
                    &["always", "if_not_present", "never"],
                )
                .map(|p| match p {
                    "always" => PullPolicy::Always,
                    "never" => PullPolicy::Never,
                    _ => PullPolicy::IfNotPresent,
                }),
        };
        Some(Image {
            name: name?,
            pull_policy: pull_policy?,
        })
    }

    fn command(&mut self, n: &Node, path: &str) -> Option<Command> {
        // Shorthand: `command: [httpd, -f]` sets the args, like Compose's `command`.
        if let Value::Seq(_) = n.value {
            return Some(Command {
                args: Some(self.strings(n, &join(path, "args"))?),
                ..Command::default()
            });
        }
        if let Value::Scalar { .. } = n.value {
            self.expected(
                n,
                path,
                "a mapping {entrypoint, args, workdir} or a list of arguments (not a shell string)",
            );
            return None;
        }
        let o = self.obj(n, path, &["entrypoint", "args", "workdir"])?;
        let entrypoint = o
            .get("entrypoint")
            .map(|n| self.strings(n, &o.child("entrypoint")));
        let args = o.get("args").map(|n| self.strings(n, &o.child("args")));
        let workdir = o
            .get("workdir")
            .map(|n| self.nonempty_string(n, &o.child("workdir")));
        Some(Command {
            entrypoint: entrypoint.flatten(),
            args: args.flatten(),
            workdir: workdir.flatten(),
        })
    }

    fn env(&mut self, n: &Node, path: &str) -> BTreeMap<String, EnvValue> {
        let mut out = BTreeMap::new();
        self.spans.insert(path, n.loc);
        let Value::Map(entries) = &n.value else {
            self.expected(n, path, "a mapping of variable names to values");
            return out;
        };
        for (k, v) in entries {
            let key = k.as_key().unwrap_or_default().to_owned();
            let vpath = join(path, &key);
            self.spans.insert(&format!("{vpath}#key"), k.loc);
            let value = match &v.value {
                Value::Scalar { text, .. } => {
                    self.spans.insert(&vpath, v.loc);
                    Some(EnvValue::Literal(text.clone()))
                }
                Value::Map(_) => self.obj(v, &vpath, &["from_host"]).and_then(|o| {
                    let var = self
                        .require(&o, "from_host")
                        .and_then(|n| self.nonempty_string(n, &o.child("from_host")))?;
                    Some(EnvValue::FromHost { from_host: var })
                }),
                _ => {
                    self.expected(
                        v,
                        &vpath,
                        "a string, or {from_host: VAR} to copy a host variable",
                    );
                    None
                }
            };
            if let Some(value) = value {
                out.insert(key, value);
            }
        }
        out
    }

    fn secret(&mut self, n: &Node, path: &str) -> Option<Secret> {
        let o = self.obj(n, path, &["name", "source", "target"])?;
        let name = self
            .require(&o, "name")
            .and_then(|n| self.nonempty_string(n, &o.child("name")));
        let source = self
            .require(&o, "source")
            .and_then(|n| self.nonempty_string(n, &o.child("source")));
        let target = o
            .get("target")
            .map(|n| self.nonempty_string(n, &o.child("target")));
        let name = name?;
        let target = target
            .flatten()
            .unwrap_or_else(|| format!("/run/secrets/{name}"));
        Some(Secret {
            name,
            source: source?,
            target,
        })
    }

    fn resources(&mut self, n: &Node, path: &str) -> Option<Resources> {
        let o = self.obj(n, path, &["cpu", "memory", "pids"])?;
        let cpu = o.get("cpu").map(|n| self.parsed::<Cpu>(n, &o.child("cpu")));
        let memory = o
            .get("memory")
            .map(|n| self.parsed::<ByteSize>(n, &o.child("memory")));
        let pids = o
            .get("pids")
            // 1 cannot work: starting a container takes two processes in its cgroup.
            .map(|n| self.uint(n, &o.child("pids"), 2, u64::from(u32::MAX)));
        Some(Resources {
            cpu: cpu.flatten(),
            memory: memory.flatten(),
            pids: pids.flatten(),
        })
    }

    fn protocol(&mut self, n: &Node, path: &str) -> Option<Protocol> {
        self.choice(n, path, &["tcp", "udp"]).map(|p| {
            if p == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            }
        })
    }

    fn endpoint(&mut self, n: &Node, path: &str) -> Option<Endpoint> {
        let o = self.obj(n, path, &["name", "port", "protocol", "publish"])?;
        let port = self
            .require(&o, "port")
            .and_then(|n| self.port(n, &o.child("port")));
        let protocol = o.get("protocol").map_or(Some(Protocol::Tcp), |n| {
            self.protocol(n, &o.child("protocol"))
        });
        let publish = o.get("publish").map(|n| self.port(n, &o.child("publish")));
        let name = o
            .get("name")
            .map(|n| self.nonempty_string(n, &o.child("name")));
        let (port, protocol) = (port?, protocol?);
        let name = name
            .flatten()
            .unwrap_or_else(|| format!("{protocol}-{port}"));
        Some(Endpoint {
            name,
            port,
            protocol,
            publish: publish.flatten(),
        })
    }

    fn health(&mut self, n: &Node, path: &str) -> Option<Health> {
        let o = self.obj(
            n,
            path,
            &["check", "interval", "timeout", "retries", "start_grace"],
        )?;
        let check = self
            .require(&o, "check")
            .and_then(|n| self.health_check(n, &o.child("check")));
        let interval = o
            .get("interval")
            .map_or(Some(defaults::HEALTH_INTERVAL), |n| {
                self.duration(n, &o.child("interval"))
            });
        let timeout = o
            .get("timeout")
            .map_or(Some(defaults::HEALTH_TIMEOUT), |n| {
                self.duration(n, &o.child("timeout"))
            });
        let retries = o
            .get("retries")
            .map_or(Some(defaults::HEALTH_RETRIES), |n| {
                self.uint(n, &o.child("retries"), 1, 1000).map(|v| v as u32)
            });
        let start_grace = o
            .get("start_grace")
            .map_or(Some(defaults::HEALTH_START_GRACE), |n| {
                self.duration(n, &o.child("start_grace"))
            });
        Some(Health {
            check: check?,
            interval: interval?,
            timeout: timeout?,
            retries: retries?,
            start_grace: start_grace?,
        })
    }

    /// A mapping tagged by its `type` key; returns the type and the mapping checked against the
    /// fields of that type.
    fn tagged<'n>(
        &mut self,
        n: &'n Node,
        path: &str,
        variants: &[(&'static str, &[&str])],
    ) -> Option<(&'static str, Obj<'n>)> {
        let types: Vec<&str> = variants.iter().map(|(t, _)| *t).collect();
        // Check shape and find the type before checking the other keys, so unknown-field hints
        // use the fields of the right variant.
        let Value::Map(entries) = &n.value else {
            self.expected(
                n,
                path,
                &format!("a mapping with `type: {}`", types.join("|")),
            );
            return None;
        };
        let type_node = entries
            .iter()
            .find(|(k, _)| k.as_key() == Some("type"))
            .map(|(_, v)| v);
        let Some(type_node) = type_node else {
            self.err(
                n.loc,
                &join(path, "type"),
                format!(
                    "missing field `type` in {} (one of: {})",
                    describe(path),
                    types.join(", ")
                ),
            );
            return None;
        };
        let ty = self.choice(type_node, &join(path, "type"), &types)?;
        let fields = variants
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, f)| *f)
            .unwrap_or_default();
        let mut allowed = vec!["type"];
        allowed.extend_from_slice(fields);
        let o = self.obj(n, path, &allowed)?;
        Some((ty, o))
    }

    fn health_check(&mut self, n: &Node, path: &str) -> Option<HealthCheck> {
        let (ty, o) = self.tagged(
            n,
            path,
            &[
                ("tcp", &["port"]),
                ("http", &["port", "path", "status"]),
                ("command", &["command"]),
            ],
        )?;
        match ty {
            "tcp" => {
                let port = self
                    .require(&o, "port")
                    .and_then(|n| self.port(n, &o.child("port")))?;
                Some(HealthCheck::Tcp { port })
            }
            "http" => {
                let port = self
                    .require(&o, "port")
                    .and_then(|n| self.port(n, &o.child("port")));
                let hpath = o.get("path").map_or(Some("/".to_owned()), |n| {
                    self.nonempty_string(n, &o.child("path"))
                });
                let status = o
                    .get("status")
                    .map(|n| self.uint(n, &o.child("status"), 100, 599).map(|v| v as u16));
                Some(HealthCheck::Http {
                    port: port?,
                    path: hpath?,
                    status: status.flatten(),
                })
            }
            _ => {
                let command = self
                    .require(&o, "command")
                    .and_then(|n| self.strings(n, &o.child("command")))?;
                Some(HealthCheck::Command { command })
            }
        }
    }

    fn restart(&mut self, n: &Node, path: &str) -> Option<Restart> {
        let o = self.obj(n, path, &["policy", "backoff"])?;
        let policy = o.get("policy").map_or(Some(RestartPolicy::Always), |n| {
            self.choice(n, &o.child("policy"), &["never", "on-failure", "always"])
                .map(|p| match p {
                    "never" => RestartPolicy::Never,
                    "on-failure" => RestartPolicy::OnFailure,
                    _ => RestartPolicy::Always,
                })
        });
        let backoff = o.get("backoff").map_or(Some(Backoff::default()), |n| {
            self.backoff(n, &o.child("backoff"))
        });
        Some(Restart {
            policy: policy?,
            backoff: backoff?,
        })
    }

    fn backoff(&mut self, n: &Node, path: &str) -> Option<Backoff> {
        let o = self.obj(n, path, &["initial", "max", "reset_after"])?;
        let d = Backoff::default();
        let initial = o
            .get("initial")
            .map_or(Some(d.initial), |n| self.duration(n, &o.child("initial")));
        let max = o
            .get("max")
            .map_or(Some(d.max), |n| self.duration(n, &o.child("max")));
        let reset_after = o.get("reset_after").map_or(Some(d.reset_after), |n| {
            self.duration(n, &o.child("reset_after"))
        });
        Some(Backoff {
            initial: initial?,
            max: max?,
            reset_after: reset_after?,
        })
    }

    fn update(&mut self, n: &Node, path: &str) -> Option<Update> {
        let o = self.obj(n, path, &["order", "health_timeout"])?;
        let d = Update::default();
        let order = o.get("order").map_or(Some(d.order), |n| {
            self.choice(n, &o.child("order"), &["start-first", "stop-first"])
                .map(|v| {
                    if v == "stop-first" {
                        UpdateOrder::StopFirst
                    } else {
                        UpdateOrder::StartFirst
                    }
                })
        });
        let health_timeout = o.get("health_timeout").map_or(Some(d.health_timeout), |n| {
            self.duration(n, &o.child("health_timeout"))
        });
        Some(Update {
            order: order?,
            health_timeout: health_timeout?,
        })
    }

    fn dependency(&mut self, n: &Node, path: &str) -> Option<Dependency> {
        // Shorthand: `depends: [db]`.
        if let Value::Scalar { .. } = n.value {
            let service = self.nonempty_string(n, &join(path, "service"))?;
            self.spans.insert(path, n.loc);
            return Some(Dependency {
                service,
                condition: Condition::Started,
                timeout: defaults::DEPENDS_TIMEOUT,
            });
        }
        let o = self.obj(n, path, &["service", "condition", "timeout"])?;
        let service = self
            .require(&o, "service")
            .and_then(|n| self.nonempty_string(n, &o.child("service")));
        let condition = o.get("condition").map_or(Some(Condition::Started), |n| {
            self.choice(
                n,
                &o.child("condition"),
                &["started", "healthy", "completed"],
            )
            .map(|c| match c {
                "healthy" => Condition::Healthy,
                "completed" => Condition::Completed,
                _ => Condition::Started,
            })
        });
        let timeout = o
            .get("timeout")
            .map_or(Some(defaults::DEPENDS_TIMEOUT), |n| {
                self.duration(n, &o.child("timeout"))
            });
        Some(Dependency {
            service: service?,
            condition: condition?,
            timeout: timeout?,
        })
    }

    fn init_step(&mut self, n: &Node, path: &str) -> Option<InitStep> {
        const ACTIONS: &[&str] = &["wait_tcp", "wait_http", "run"];
        let o = self.obj(n, path, &["wait_tcp", "wait_http", "run", "on_failure"])?;
        let present: Vec<&str> = ACTIONS.iter().copied().filter(|a| o.has(a)).collect();
        if present.len() != 1 {
            let msg = if present.is_empty() {
                format!(
                    "{} needs one of `wait_tcp`, `wait_http` or `run`",
                    describe(path)
                )
            } else {
                format!(
                    "{} has {}; write one action per step",
                    describe(path),
                    present
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
            };
            self.err(o.loc, path, msg);
            return None;
        }
        let on_failure = o.get("on_failure").map_or(Some(OnFailure::Fail), |n| {
            self.choice(n, &o.child("on_failure"), &["fail", "continue"])
                .map(|v| {
                    if v == "continue" {
                        OnFailure::Continue
                    } else {
                        OnFailure::Fail
                    }
                })
        });
        let key = present[0];
        let apath = o.child(key);
        let an = self.require(&o, key)?;
        let action = match key {
            "wait_tcp" => {
                let a = self.obj(an, &apath, &["host", "port", "timeout"])?;
                let host = self
                    .require(&a, "host")
                    .and_then(|n| self.nonempty_string(n, &a.child("host")));
                let port = self
                    .require(&a, "port")
                    .and_then(|n| self.port(n, &a.child("port")));
                let timeout = a.get("timeout").map_or(Some(defaults::WAIT_TIMEOUT), |n| {
                    self.duration(n, &a.child("timeout"))
                });
                InitAction::WaitTcp {
                    host: host?,
                    port: port?,
                    timeout: timeout?,
                }
            }
            "wait_http" => {
                let a = self.obj(an, &apath, &["url", "timeout"])?;
                let url = self
                    .require(&a, "url")
                    .and_then(|n| self.nonempty_string(n, &a.child("url")));
                let timeout = a.get("timeout").map_or(Some(defaults::WAIT_TIMEOUT), |n| {
                    self.duration(n, &a.child("timeout"))
                });
                InitAction::WaitHttp {
                    url: url?,
                    timeout: timeout?,
                }
            }
            _ => {
                let a = self.obj(an, &apath, &["command", "timeout"])?;
                let command = self
                    .require(&a, "command")
                    .and_then(|n| self.strings(n, &a.child("command")));
                let timeout = a.get("timeout").map_or(Some(defaults::RUN_TIMEOUT), |n| {
                    self.duration(n, &a.child("timeout"))
                });
                InitAction::Run {
                    command: command.unwrap_or_default(),
                    timeout: timeout?,
                }
            }
        };
        Some(InitStep {
            action,
            on_failure: on_failure?,
        })
    }

    fn mount(&mut self, n: &Node, path: &str) -> Option<Mount> {
        let (ty, o) = self.tagged(
            n,
            path,
            &[
                ("named", &["name", "target", "readonly"]),
                ("bind", &["source", "target", "readonly"]),
                ("tmpfs", &["target", "size"]),
            ],
        )?;
        let target = self
            .require(&o, "target")
            .and_then(|n| self.nonempty_string(n, &o.child("target")));
        let readonly = o
            .get("readonly")
            .map_or(Some(false), |n| self.boolean(n, &o.child("readonly")));
        match ty {
            "named" => {
                let name = self
                    .require(&o, "name")
                    .and_then(|n| self.nonempty_string(n, &o.child("name")));
                Some(Mount::Named {
                    name: name?,
                    target: target?,
                    readonly: readonly?,
                })
            }
            "bind" => {
                let source = self
                    .require(&o, "source")
                    .and_then(|n| self.nonempty_string(n, &o.child("source")));
                Some(Mount::Bind {
                    source: source?,
                    target: target?,
                    readonly: readonly?,
                })
            }
            _ => {
                let size = o
                    .get("size")
                    .map(|n| self.parsed::<ByteSize>(n, &o.child("size")));
                Some(Mount::Tmpfs {
                    target: target?,
                    size: size.flatten(),
                })
            }
        }
    }
}
