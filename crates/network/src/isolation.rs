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

/// Makes POSTROUTING jump to [`MASQ_CHAIN`] (once; the chain must exist).
fn ensure_masq_jump() -> Result<()> {
    let rule = ["POSTROUTING", "-j", MASQ_CHAIN];
    let run = |op: &str| {
        Command::new("iptables")
            .args(["-t", "nat", "--wait", op])
            .args(rule)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    let fail = |reason: String| NetworkError::Command {
        command: format!("iptables -t nat -I {}", rule.join(" ")),
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
    ensure_masq_jump()
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
        assert_eq!(rules.matches("-j MASQUERADE").count(), 3, "{rules}");
        assert!(rules.contains("*nat\n:ZLAYER-MASQ - [0:0]\n"), "{rules}");
        assert_eq!(ruleset(&nets[..1]).matches("-j DROP").count(), 0);
    }
}
