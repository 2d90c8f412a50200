//! The service table a network's DNS server answers from. The daemon owns the truth (which
//! replicas are healthy) and pushes it here; the server only reads.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Mutex, RwLock};

/// Service name → healthy replica addresses, per deployment.
///
/// A query for `NAME.DEPLOYMENT` answers that deployment's service; a bare `NAME` answers every
/// deployment's service of that name on this network (normally one; containers also get their
/// deployment as a search domain, so their own deployment's service is found first). Each answer
/// rotates the address list by one, so clients that take the first address spread over replicas.
#[derive(Debug, Default)]
pub struct DnsRegistry {
    services: RwLock<BTreeMap<(String, String), Vec<Ipv4Addr>>>,
    rotation: Mutex<HashMap<String, usize>>,
}

impl DnsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the healthy addresses of `service` in `deployment`. An empty list keeps the name
    /// known (answered with no addresses instead of being forwarded upstream).
    pub fn set_service(&self, deployment: &str, service: &str, healthy: Vec<Ipv4Addr>) {
        let mut map = self.services.write().unwrap_or_else(|p| p.into_inner());
        map.insert(
            (
                deployment.to_ascii_lowercase(),
                service.to_ascii_lowercase(),
            ),
            healthy,
        );
    }

    /// Forget a service (its names are forwarded upstream afterwards).
    pub fn remove_service(&self, deployment: &str, service: &str) {
        let mut map = self.services.write().unwrap_or_else(|p| p.into_inner());
        map.remove(&(
            deployment.to_ascii_lowercase(),
            service.to_ascii_lowercase(),
        ));
    }

    /// Forget every service of a deployment.
    pub fn remove_deployment(&self, deployment: &str) {
        let dep = deployment.to_ascii_lowercase();
        let mut map = self.services.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|(d, _), _| *d != dep);
    }

    /// Addresses for a query name (case-insensitive, trailing dot optional), rotated; `None` if
    /// the name is not ours.
    pub fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut ips: Vec<Ipv4Addr> = {
            let map = self.services.read().unwrap_or_else(|p| p.into_inner());
            match name.split_once('.') {
                Some((svc, dep)) => map.get(&(dep.to_string(), svc.to_string()))?.clone(),
                None => {
                    let mut found = false;
                    let mut all = Vec::new();
                    for ((_, svc), addrs) in map.iter() {
                        if *svc == name {
                            found = true;
                            all.extend(addrs.iter().copied());
                        }
                    }
                    if !found {
                        return None;
                    }
                    all
                }
            }
        };
        if ips.len() > 1 {
            let mut rotation = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
            let next = rotation.entry(name).or_insert(0);
            let by = *next % ips.len();
            *next = next.wrapping_add(1);
            ips.rotate_left(by);
        }
        Some(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn names_and_rotation() {
        let r = DnsRegistry::new();
        r.set_service(
            "demo",
            "web",
            vec![ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")],
        );
        r.set_service("demo", "db", vec![ip("10.0.0.9")]);
        let first: Vec<_> = (0..3).map(|_| r.lookup("web.demo.").unwrap()[0]).collect();
        assert_eq!(first, vec![ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")]);
        assert_eq!(r.lookup("DB").unwrap(), vec![ip("10.0.0.9")]);
        assert_eq!(r.lookup("db.other"), None);
        assert_eq!(r.lookup("example.com"), None);
        r.set_service("demo", "db", vec![]);
        assert_eq!(r.lookup("db.demo"), Some(vec![]));
        r.remove_deployment("demo");
        assert_eq!(r.lookup("web"), None);
    }
}
