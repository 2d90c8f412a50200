//! `run`, `ps`, `logs`, `exec`, `stop`, `kill`, `rm`, `wait`, `inspect`, `stats`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use tokio::sync::mpsc;
use zlayer_agent::containers::log_time::parse_log_time;
use zlayer_agent::containers::request::parse_bytes;
use zlayer_agent::containers::ExecSpec;
use zlayer_agent::containers::{
    ContainerDetails, ContainerSummary, CreateRequest, Created, WaitResult,
};
use zlayer_api::client::{encode_query, ClientError};
use zlayer_api::frames;
use zlayer_api::Client;

use super::listing::{filter_pair, filters_query, ps_row, short_command, PS_FIELDS};
use super::{each, exit_status, CmdResult};
use crate::output::{human_size, print_json, print_table, Format};
use crate::template::ListFormat;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open and forward this terminal's stdin to the container.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this shell's value).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines).
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// User: name, uid, name:group or uid:gid.
    #[arg(short = 'u', long, allow_hyphen_values = true)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Replace the image's entrypoint ("" removes it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit: bytes or with k/m/g (e.g. 64m).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// name=soft[:hard], e.g. nofile=1024:2048.
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// SRC:DST[:ro] (SRC absolute = bind mount, else a named volume).
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// DST[:size=N]: a tmpfs.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    #[arg(long = "read-only")]
    pub read_only: bool,
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    #[arg(long)]
    pub privileged: bool,
    /// bridge (default), a network name, none, host, or container:NAME.
    #[arg(long)]
    pub network: Option<String>,
    /// Publish a port: [IP:]HOST:CTR[/tcp|/udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// name:ip added to /etc/hosts.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    #[arg(long)]
    pub dns: Vec<String>,
    /// KEY=VALUE labels.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// When to pull: missing (default), always, never.
    #[arg(long)]
    pub pull: Option<String>,
    pub image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// `-e KEY` takes this process's value, as docker does; unset means dropped.
fn resolve_env(env: &[String]) -> Vec<String> {
    env.iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

fn build_request(a: &RunArgs) -> anyhow::Result<CreateRequest> {
    let mut env_file = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading env file {}", f.display()))?;
        env_file.extend(
            zlayer_spec::env_file_entries(&text, &f.display().to_string(), |k| {
                std::env::var(k).ok()
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    let memory = match &a.memory {
        Some(m) => Some(parse_bytes(m).with_context(|| {
            format!("invalid --memory {m:?}: use bytes or a number with k/m/g/t, at most 8 EiB")
        })? as i64),
        None => None,
    };
    // JSON has no NaN or infinity (they would travel as null, i.e. no limit), so the CLI
    // checks --cpus itself; the daemon checks again for API clients.
    if let Some(c) = a.cpus {
        zlayer_agent::containers::request::check_cpus(c).map_err(anyhow::Error::msg)?;
    }
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let entrypoint = a.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            vec![]
        } else {
            vec![e.clone()]
        }
    });
    Ok(CreateRequest {
        image: a.image.clone(),
        name: a.name.clone(),
        cmd: a.cmd.clone(),
        entrypoint,
        env: resolve_env(&a.env),
        env_file,
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        hostname: a.hostname.clone(),
        memory,
        memory_swap: None,
        cpus: a.cpus,
        cpu_shares: a.cpu_shares,
        pids_limit: a.pids_limit,
        ulimits: a.ulimit.clone(),
        volumes: a.volumes.clone(),
        tmpfs: a.tmpfs.clone(),
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        network: a.network.clone(),
        publish: a.publish.clone(),
        add_hosts: a.add_host.clone(),
        dns: a.dns.clone(),
        dns_search: Vec::new(),
        interactive: a.interactive,
        auto_remove: a.rm,
        attached: !a.detach,
        labels,
        stop_signal: a.stop_signal.clone(),
        pull: a.pull.clone(),
    })
}

/// Writes stdout/stderr frames to this process's stdout/stderr; returns a status or error frame.
fn write_frame(stream: u8, payload: &[u8]) -> Option<(u8, Vec<u8>)> {
    match stream {
        frames::STDOUT => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(payload);
            let _ = out.flush();
            None
        }
        frames::STDERR => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(payload);
            let _ = err.flush();
            None
        }
        other => Some((other, payload.to_vec())),
    }
}

/// Reads this process's stdin on a thread and feeds it to a channel (the request body).
fn stdin_channel() -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

pub async fn run(client: &Client, args: RunArgs) -> CmdResult {
    let req = build_request(&args)?;
    let created: Created = client.post("/v1/containers", &req).await?;
    if args.detach {
        outln!("{}", created.id);
        return Ok(ExitCode::SUCCESS);
    }
    let id = created.id.clone();
    // Output comes from the log (it holds everything since the start); stdin, with -i,
    // goes through an attachment.
    let attach = if args.interactive {
        let client = client.clone();
        let id = id.clone();
        Some(tokio::spawn(async move {
            client
                .stream_frames(
                    Method::POST,
                    &format!("/v1/containers/{id}/attach"),
                    Some(stdin_channel()),
                    |_, _| Ok(()),
                )
                .await
        }))
    } else {
        None
    };
    // One request for the output and the exit: the daemon follows the log to the end,
    // then waits (and, for --rm, removes) and sends the status as the last frame.
    let logs_path = format!("/v1/containers/{id}/logs?follow=true&wait=true");
    let mut status: Option<WaitResult> = None;
    client
        .stream_frames(Method::GET, &logs_path, None, |s, p| {
            match write_frame(s, &p) {
                Some((frames::STATUS, msg)) => {
                    status = Some(serde_json::from_slice(&msg).map_err(|e| {
                        ClientError::Protocol(format!("bad status frame from the daemon: {e}"))
                    })?);
                }
                Some((_, msg)) => eprintln!("{}", String::from_utf8_lossy(&msg)),
                None => {}
            }
            Ok(())
        })
        .await?;
    let res: WaitResult = match status {
        Some(s) => s,
        // The stream ended without a status (an error was printed, or the daemon is older):
        // ask separately.
        None => {
            client
                .post(&format!("/v1/containers/{id}/wait"), &serde_json::json!({}))
                .await?
        }
    };
    if let Some(a) = attach {
        a.abort();
    }
    if let Some(err) = &res.error {
        if res.exit_code == 127 || res.exit_code == 126 {
            eprintln!("Error: {err}");
        }
    }
    Ok(exit_status(res.exit_code))
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    pub all: bool,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table`, `json`, or a Go template: '{{.ID}}\t{{.Names}}', 'table {{.ID}}\t{{.Status}}',
    /// '{{json .}}'. Fields: ID Image Command CreatedAt RunningFor Ports State Status Names Labels.
    #[arg(long, default_value = "table")]
    pub format: ListFormat,
    /// KEY=VALUE, repeatable: name, id, label, status, ancestor, exited (same key ORs, keys AND).
    #[arg(short, long = "filter", value_parser = filter_pair)]
    pub filter: Vec<(String, String)>,
}

pub async fn ps(client: &Client, args: PsArgs) -> CmdResult {
    if let ListFormat::Template(t) = &args.format {
        t.check(PS_FIELDS)?;
    }
    let list: Vec<ContainerSummary> = client
        .get(&format!(
            "/v1/containers?all={}{}",
            args.all,
            filters_query(&args.filter)
        ))
        .await?;
    // As docker: -q shortens the default table; a json or template format wins over it.
    if args.quiet && args.format == ListFormat::Table {
        for c in &list {
            outln!("{}", &c.id[..12]);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match &args.format {
        ListFormat::Json => print_json(&list)?,
        ListFormat::Template(t) => {
            let rows: Vec<_> = list.iter().map(ps_row).collect();
            for line in t.lines(PS_FIELDS, &rows) {
                outln!("{line}");
            }
        }
        ListFormat::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    vec![
                        c.id[..12].to_string(),
                        c.image.clone(),
                        short_command(&c.command),
                        c.status.clone(),
                        c.ports.join(", "),
                        c.name.clone(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "STATUS",
                    "PORTS",
                    "NAMES",
                ],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub container: String,
    /// Follow the log until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, short = 'n')]
    pub tail: Option<usize>,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only lines since this time: RFC 3339 (2026-12-03T19:30:00Z), Unix seconds, or a
    /// duration before now (10m, 1h30m).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines until this time (same forms as --since); a follow ends then.
    #[arg(long)]
    pub until: Option<String>,
}

pub async fn logs(client: &Client, args: LogsArgs) -> CmdResult {
    let mut path = format!(
        "/v1/containers/{}/logs?follow={}&timestamps={}",
        encode_query(&args.container),
        args.follow,
        args.timestamps
    );
    if let Some(t) = args.tail {
        path.push_str(&format!("&tail={t}"));
    }
    // Relative times count back from the client's clock, as docker's CLI does.
    let now = chrono::Utc::now();
    for (flag, key, value) in [
        ("--since", "since", &args.since),
        ("--until", "until", &args.until),
    ] {
        if let Some(v) = value {
            let t = parse_log_time(flag, v, now).map_err(|e| anyhow::anyhow!(e.message))?;
            path.push_str(&format!(
                "&{key}={}",
                encode_query(&t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            ));
        }
    }
    let mut failure = None;
    client
        .stream_frames(Method::GET, &path, None, |s, p| {
            if let Some((frames::ERROR, msg)) = write_frame(s, &p) {
                failure = Some(String::from_utf8_lossy(&msg).into_owned());
            }
            Ok(())
        })
        .await?;
    if let Some(f) = failure {
        bail!("{f}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Forward stdin to the process.
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    #[arg(short = 'u', long, allow_hyphen_values = true)]
    pub user: Option<String>,
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub cmd: Vec<String>,
}

pub async fn exec(client: &Client, args: ExecArgs) -> CmdResult {
    let spec = ExecSpec {
        args: args.cmd.clone(),
        env: resolve_env(&args.env),
        user: args.user.clone(),
        cwd: args.workdir.clone(),
        stdin: args.interactive,
    };
    let path = format!(
        "/v1/containers/{}/exec?spec={}",
        encode_query(&args.container),
        encode_query(&serde_json::to_string(&spec)?)
    );
    let stdin = args.interactive.then(stdin_channel);
    let mut status: Option<i64> = None;
    let mut failure: Option<String> = None;
    client
        .stream_frames(Method::POST, &path, stdin, |s, p| {
            match write_frame(s, &p) {
                Some((frames::STATUS, msg)) => {
                    let v: serde_json::Value = serde_json::from_slice(&msg).unwrap_or_default();
                    status = v["exit_code"].as_i64();
                }
                Some((_, msg)) => {
                    let v: serde_json::Value = serde_json::from_slice(&msg).unwrap_or_default();
                    failure = Some(v["error"].as_str().unwrap_or("exec failed").to_string());
                }
                None => {}
            }
            Ok(())
        })
        .await?;
    match (status, failure) {
        (Some(code), _) => Ok(exit_status(code)),
        (None, Some(f)) => bail!("{f}"),
        (None, None) => bail!("exec ended without an exit status"),
    }
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL.
    #[arg(short, long)]
    pub time: Option<u64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn stop(client: &Client, args: StopArgs) -> CmdResult {
    let t = args.time.map(|t| format!("?t={t}")).unwrap_or_default();
    post_each(client, &args.containers, "stop", &t).await
}

/// `POST /v1/containers/{c}/{action}{query}` for each container, docker-style output.
pub(super) async fn post_each(
    client: &Client,
    containers: &[String],
    action: &str,
    query: &str,
) -> CmdResult {
    each(containers, |c| {
        let path = format!("/v1/containers/{}/{action}{query}", encode_query(&c));
        async move {
            client
                .post::<_, serde_json::Value>(&path, &serde_json::json!({}))
                .await
                .map(|_| c)
        }
    })
    .await
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal name or number (default KILL).
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn kill(client: &Client, args: KillArgs) -> CmdResult {
    let q = args
        .signal
        .as_ref()
        .map(|s| format!("?signal={}", encode_query(s)))
        .unwrap_or_default();
    post_each(client, &args.containers, "kill", &q).await
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn rm(client: &Client, args: RmArgs) -> CmdResult {
    each(&args.containers, |c| {
        let path = format!("/v1/containers/{}?force={}", encode_query(&c), args.force);
        async move { client.delete::<serde_json::Value>(&path).await.map(|_| c) }
    })
    .await
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn wait(client: &Client, args: WaitArgs) -> CmdResult {
    let mut last = 0;
    for c in &args.containers {
        let r: WaitResult = client
            .post(
                &format!("/v1/containers/{}/wait", encode_query(c)),
                &serde_json::json!({}),
            )
            .await?;
        outln!("{}", r.exit_code);
        last = r.exit_code;
    }
    let _ = last;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn inspect(client: &Client, args: InspectArgs) -> CmdResult {
    let mut all = Vec::new();
    for c in &args.containers {
        let d: ContainerDetails = client
            .get(&format!("/v1/containers/{}", encode_query(c)))
            .await?;
        all.push(d);
    }
    print_json(&all)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print once instead of refreshing every second.
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn stats(client: &Client, args: StatsArgs) -> CmdResult {
    let mut prev: std::collections::HashMap<String, (u64, std::time::Instant)> = Default::default();
    loop {
        let mut rows = Vec::new();
        let mut json = Vec::new();
        for c in &args.containers {
            let s: zlayer_agent::containers::ContainerStats = client
                .get(&format!("/v1/containers/{}/stats", encode_query(c)))
                .await?;
            let now = std::time::Instant::now();
            let cpu = match prev.get(c) {
                Some((ns, t)) => {
                    let dt = now.duration_since(*t).as_nanos().max(1) as f64;
                    format!(
                        "{:.2}%",
                        (s.cpu_usage_ns.saturating_sub(*ns)) as f64 / dt * 100.0
                    )
                }
                None => "--".to_string(),
            };
            prev.insert(c.clone(), (s.cpu_usage_ns, now));
            let limit = s
                .memory_limit
                .map(human_size)
                .unwrap_or_else(|| "unlimited".into());
            let pids = match s.pids_limit {
                Some(l) => format!("{} / {l}", s.pids_current),
                None => s.pids_current.to_string(),
            };
            // A figure the host's cgroups cannot give (controller not enabled) is unknown, not 0.
            let na = |what: &str, text: String| if s.has(what) { text } else { "n/a".into() };
            rows.push(vec![
                c.clone(),
                na("cpu", cpu),
                na(
                    "memory",
                    format!("{} / {limit}", human_size(s.memory_usage)),
                ),
                na("pids", pids),
            ]);
            json.push(serde_json::json!({"container": c, "stats": s}));
        }
        if args.format == Format::Json {
            print_json(&json)?;
        } else {
            print_table(&["CONTAINER", "CPU %", "MEM USAGE / LIMIT", "PIDS"], &rows);
        }
        if args.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        outln!();
    }
}
