//! Isolation between networks.
//!
//! The bridge and firewall plugins alone do not isolate networks: the firewall plugin accepts
//! everything *from* a container's IP in FORWARD, so a container on network A could reach one on
//! network B through the host's routing. We keep one iptables chain, [`ISOLATION_CHAIN`], with a
//! DROP rule for every ordered pair of our bridges. The firewall plugin jumps to it (as its
//! `iptablesAdminChainName`) before its own accept rules.
//!
//! Connections that were DNATed (a published port, reached via the host) are exempt, so a
//! container can still use another network's published ports, as the issue asks.
//!
//! The chain is rewritten as a whole with `iptables-restore --noflush`, which replaces just this
//! chain atomically (no window without rules) and leaves every other rule alone.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{NetworkError, Result};
use crate::networks::{NetworkInfo, ISOLATION_CHAIN};

/// The `iptables-restore` input for the given networks.
pub fn ruleset(networks: &[NetworkInfo]) -> String {
    let mut out = format!("*filter\n:{ISOLATION_CHAIN} - [0:0]\n");
    for from in networks {
        for to in networks.iter().filter(|n| n.bridge != from.bridge) {
            out.push_str(&format!(
                "-A {ISOLATION_CHAIN} -i {} -o {} -m conntrack ! --ctstate DNAT \
                 -m comment --comment \"zlayer isolation {} -> {}\" -j DROP\n",
                from.bridge, to.bridge, from.name, to.name
            ));
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// Replace the isolation chain's rules in the calling thread's network namespace.
pub fn apply(networks: &[NetworkInfo]) -> Result<()> {
    let input = ruleset(networks);
    let command = "iptables-restore --noflush --wait";
    let fail = |reason: String| NetworkError::Command {
        command: command.to_string(),
        reason,
    };
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(format!("writing rules: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {} (rules were:\n{input})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::{bridge_name, gateway_of};

    #[test]
    fn one_drop_rule_per_ordered_pair() {
        let nets: Vec<NetworkInfo> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let subnet = format!("10.{}.0.0/16", 220 + i).parse().unwrap();
                NetworkInfo {
                    name: n.to_string(),
                    subnet,
                    gateway: gateway_of(subnet),
                    bridge: bridge_name(n),
                    conflist_path: Default::default(),
                }
            })
            .collect();
        let rules = ruleset(&nets);
        assert_eq!(rules.matches("-j DROP").count(), 6, "{rules}");
        assert!(rules.starts_with("*filter\n:ZLAYER-ISOLATION - [0:0]\n"));
        assert!(rules.ends_with("COMMIT\n"));
        assert_eq!(ruleset(&nets[..1]).matches("-A").count(), 0);
    }
}
