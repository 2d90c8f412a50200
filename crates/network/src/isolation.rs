//! Isolation between networks.
//!
//! The bridge plugin alone does not isolate networks: the host routes between its bridges, so a
//! container on network A could reach one on network B. We keep one iptables chain,
//! [`ISOLATION_CHAIN`], with a DROP rule for every ordered pair of our bridges.
//!
//! Forwarding is decided once per network, not per container: FORWARD jumps (first) to
//! [`FORWARD_CHAIN`], which jumps to the isolation chain, then accepts what a network's
//! containers send, and replies and published-port (DNATed) connections to them. That is what
//! the CNI firewall plugin did with two rules per container IP (ten iptables execs on every ADD
//! and DEL), so the agent no longer chains that plugin; it also keeps containers reachable when
//! the host's FORWARD policy is DROP (e.g. with Docker installed).
//!
//! Connections that were DNATed (a published port, reached via the host) are exempt, so a
//! container can still use another network's published ports, as the issue asks.
//!
//! The chain is rewritten as a whole with `iptables-restore --noflush`, which replaces just this
//! chain atomically (no window without rules) and leaves every other rule alone.
//!
//! Outgoing NAT is set up here too, once per network, instead of by the bridge plugin's
//! `ipMasq` on every ADD/DEL (which costs two iptables-nft runs per container): the nat chain
//! [`MASQ_CHAIN`] masquerades traffic from each network's subnet leaving through another
//! interface, and POSTROUTING jumps to it (added once, checked with `iptables -C`).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{NetworkError, Result};
use crate::networks::{NetworkInfo, ISOLATION_CHAIN};

/// The nat chain with one MASQUERADE rule per network.
pub const MASQ_CHAIN: &str = "ZLAYER-MASQ";

/// The filter chain FORWARD jumps to first: isolation, then per-network accept rules.
pub const FORWARD_CHAIN: &str = "ZLAYER-FORWARD";

/// The `iptables-restore` input for the given networks.
pub fn ruleset(networks: &[NetworkInfo]) -> String {
    let mut out = format!("*filter\n:{ISOLATION_CHAIN} - [0:0]\n:{FORWARD_CHAIN} - [0:0]\n");
    out.push_str(&format!("-A {FORWARD_CHAIN} -j {ISOLATION_CHAIN}\n"));
    for n in networks {
        let (br, name) = (&n.bridge, &n.name);
        out.push_str(&format!(
            "-A {FORWARD_CHAIN} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT \
             -m comment --comment \"zlayer replies and published ports to {name}\" -j ACCEPT\n\
             -A {FORWARD_CHAIN} -i {br} -m comment --comment \"zlayer from {name}\" -j ACCEPT\n"
        ));
    }
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
    out.push_str(&format!("*nat\n:{MASQ_CHAIN} - [0:0]\n"));
    for n in networks {
        out.push_str(&format!(
            "-A {MASQ_CHAIN} -s {} ! -o {} -m comment --comment \"zlayer masquerade {}\" -j MASQUERADE\n",
            n.subnet, n.bridge, n.name
        ));
    }
    out.push_str("COMMIT\n");
    out
}

/// Makes `from` (a built-in chain of `table`) jump to `to` first (once; `to` must exist).
fn ensure_jump(table: &str, from: &str, to: &str) -> Result<()> {
    let rule = [from, "-j", to];
    let run = |op: &str| {
        Command::new("iptables")
            .args(["-t", table, "--wait", op])
            .args(rule)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    let fail = |reason: String| NetworkError::Command {
        command: format!("iptables -t {table} -I {}", rule.join(" ")),
        reason,
    };
    let check = run("-C").map_err(|e| fail(e.to_string()))?;
    if check.status.success() {
        return Ok(());
    }
    let add = run("-I").map_err(|e| fail(e.to_string()))?;
    if !add.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&add.stderr).trim().to_string(),
        ));
    }
    Ok(())
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
    ensure_jump("nat", "POSTROUTING", MASQ_CHAIN)?;
    ensure_jump("filter", "FORWARD", FORWARD_CHAIN)
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
        assert!(rules.starts_with(
            "*filter\n:ZLAYER-ISOLATION - [0:0]\n:ZLAYER-FORWARD - [0:0]\n-A ZLAYER-FORWARD -j ZLAYER-ISOLATION\n"
        ));
        assert_eq!(rules.matches("-j ACCEPT").count(), 6, "{rules}");
        assert!(rules.ends_with("COMMIT\n"));
        assert_eq!(rules.matches("-j MASQUERADE").count(), 3, "{rules}");
        assert!(rules.contains("*nat\n:ZLAYER-MASQ - [0:0]\n"), "{rules}");
        assert_eq!(ruleset(&nets[..1]).matches("-j DROP").count(), 0);
    }
}
