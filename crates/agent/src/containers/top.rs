//! `top CONTAINER [ps OPTIONS]`: the container's processes as the host's `ps` shows them
//! (default `-ef`: UID PID PPID C STIME TTY TIME CMD), rows kept only for the processes of
//! the container's cgroup, as docker does. The host's procps `ps` is used rather than a
//! reimplementation so every `ps` option a user knows works.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zlayer_runtime::orphan;

use super::record::ContainerState;
use crate::error::{AgentError, Result};
use crate::Agent;

/// How long `ps` may run (it reads /proc; a hung one must not hang the request).
const PS_TIMEOUT: Duration = Duration::from_secs(10);

/// `top`'s answer: `ps`'s column titles and one row per container process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopResult {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// `ps` output reduced to the rows whose PID is in `pids`. The last column (the command)
/// may hold spaces: a row's fields beyond the titles' count are joined into it.
pub fn parse_ps_output(output: &str, pids: &BTreeSet<i32>) -> Result<TopResult> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_col = titles.iter().position(|t| t == "PID").ok_or_else(|| {
        AgentError::invalid(format!(
            "the ps options give no PID column (titles: {}); add pid to -o",
            titles.join(" ")
        ))
    })?;
    let mut processes = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if fields.len() > titles.len() {
            let cmd = fields.split_off(titles.len() - 1).join(" ");
            fields.push(cmd);
        }
        let pid = fields.get(pid_col).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            processes.push(fields);
        }
    }
    Ok(TopResult { titles, processes })
}

/// Runs the host's `ps` with `args`, optionally limited to `pids` with `-q`.
async fn run_ps(args: &[String], pids: Option<&str>) -> Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new("ps");
    cmd.args(args).kill_on_drop(true);
    if let Some(pids) = pids {
        cmd.arg("-q").arg(pids);
    }
    tokio::time::timeout(PS_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            AgentError::internal(format!(
                "ps {} did not finish within {} seconds",
                args.join(" "),
                PS_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| AgentError::internal(format!("cannot run the host's ps: {e}")))
}

impl Agent {
    /// `top`: `ps_args` as docker passes them to `ps` (none: `-ef`).
    pub async fn container_top(
        self: &Arc<Self>,
        key: &str,
        ps_args: &[String],
    ) -> Result<TopResult> {
        let key = key.to_string();
        let pids = self
            .run_blocking(move |a| {
                let r = a.containers().resolve(&key)?;
                if r.state != ContainerState::Running {
                    return Err(AgentError::conflict(format!(
                        "container {} is not running",
                        r.name
                    )));
                }
                let dir = a.container_dir(&r.id);
                let path = orphan::cgroups_path(&dir).ok_or_else(|| {
                    AgentError::internal(format!(
                        "container {}: no cgroupsPath in its bundle",
                        r.name
                    ))
                })?;
                Ok(orphan::members(&path)
                    .into_iter()
                    .collect::<BTreeSet<i32>>())
            })
            .await?;
        let args: Vec<String> = if ps_args.is_empty() {
            vec!["-ef".to_string()]
        } else {
            ps_args.to_vec()
        };
        let list = pids
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // `-q` keeps ps to the container's processes; some options (`f`) refuse it, so
        // without it on failure, as docker does.
        let mut out = run_ps(&args, (!list.is_empty()).then_some(list.as_str())).await?;
        if !out.status.success() {
            out = run_ps(&args, None).await?;
        }
        if !out.status.success() {
            return Err(AgentError::invalid(format!(
                "ps {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        parse_ps_output(&String::from_utf8_lossy(&out.stdout), &pids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS_EF: &str = "\
UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 19:00 ?        00:00:01 /sbin/init
root        4242    4200  0 19:01 ?        00:00:00 sh -c sleep 1000 & sleep 1001
root        4243    4242  0 19:01 ?        00:00:00 sleep 1000
";

    #[test]
    fn rows_of_the_container_with_the_command_whole() {
        let pids: BTreeSet<i32> = [4242, 4243].into();
        let top = parse_ps_output(PS_EF, &pids).unwrap();
        assert_eq!(
            top.titles,
            ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        );
        assert_eq!(top.processes.len(), 2);
        assert_eq!(top.processes[0][7], "sh -c sleep 1000 & sleep 1001");
        assert_eq!(top.processes[1][1], "4243");
    }

    #[test]
    fn no_pid_column_is_a_clear_error() {
        let e = parse_ps_output("COMMAND\nsleep\n", &BTreeSet::new()).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidInput);
        assert!(e.message.contains("no PID column"), "{e}");
    }
}
