//! Content of the generated /etc/hosts and /etc/resolv.conf.

use std::net::IpAddr;

const LOCALHOST_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// /etc/hosts: the host's file with host networking (docker copies it), else the loopback
/// entries; then the container's own address and the `--add-host` entries.
pub fn hosts_file(
    hostname: &str,
    ip: Option<IpAddr>,
    extra: &[(String, IpAddr)],
    host_hosts: Option<&str>,
) -> String {
    let mut s = match host_hosts {
        Some(h) => {
            let mut h = h.to_string();
            if !h.ends_with('\n') && !h.is_empty() {
                h.push('\n');
            }
            h
        }
        None => LOCALHOST_HOSTS.to_string(),
    };
    if let Some(ip) = ip {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    for (name, addr) in extra {
        s.push_str(&format!("{addr}\t{name}\n"));
    }
    s
}

/// /etc/resolv.conf: explicit `--dns`/`--dns-search` win; otherwise the host's servers.
/// Outside the host's network namespace loopback servers are unreachable, so they are
/// dropped, and when nothing remains docker's public fallback servers are used.
pub fn resolv_conf(host: &str, dns: &[IpAddr], search: &[String], host_network: bool) -> String {
    let mut servers: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
    let mut searches: Vec<String> = search.to_vec();
    let mut options: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("nameserver") if dns.is_empty() => {
                if let Some(addr) = it.next() {
                    let loopback = addr
                        .parse::<IpAddr>()
                        .map(|a| a.is_loopback())
                        .unwrap_or(false);
                    if host_network || !loopback {
                        servers.push(addr.to_string());
                    }
                }
            }
            Some("search") | Some("domain") if search.is_empty() => {
                searches.extend(it.map(str::to_string));
            }
            Some("options") => options.extend(it.map(str::to_string)),
            _ => {}
        }
    }
    if servers.is_empty() {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    let mut s = String::new();
    if !searches.is_empty() {
        s.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for srv in servers {
        s.push_str(&format!("nameserver {srv}\n"));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}
