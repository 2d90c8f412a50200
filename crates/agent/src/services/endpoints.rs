//! Where a service is reached: its DNS name (`service`, `service.deployment`) and its
//! published ports, both pointed at the replicas that may take traffic.

use std::collections::HashSet;

use zlayer_spec::Service;

use super::health::HealthStatus;
use super::key::ServiceKey;
use super::labels::Owner;
use super::task::TaskState;
use crate::containers::{ContainerRecord, ContainerState};
use crate::Agent;

impl Agent {
    /// Points the service's DNS name (`service`, `service.deployment`) and its published ports
    /// at its healthy running replicas (running ones when it has no health check), except
    /// `leaving`. Does nothing when that set did not change since the last call.
    pub(crate) fn sync_endpoints(
        &self,
        key: &ServiceKey,
        svc: &Service,
        owned: &[(ContainerRecord, Owner)],
        leaving: &HashSet<String>,
        st: &mut TaskState,
    ) {
        let mut ids: Vec<String> = owned
            .iter()
            .map(|(r, _)| r)
            .filter(|r| r.state == ContainerState::Running && !leaving.contains(&r.id))
            .filter(|r| {
                svc.health.is_none()
                    || self.services.health_of(&r.id) == Some(HealthStatus::Healthy)
            })
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        if st.endpoint_ids.as_ref() == Some(&ids) {
            return;
        }
        let ips: Vec<std::net::Ipv4Addr> = ids
            .iter()
            .filter_map(|id| self.networking().sandbox(id)?.ipv4())
            .collect();
        tracing::debug!(deployment = %key.deployment, service = %key.service, ?ips, "service endpoints");
        self.set_dns_service(&key.deployment, &key.service, &ips);
        self.services.published.set_backends(key, &ips);
        st.endpoint_ids = Some(ids);
    }

    /// Takes a service that is no longer declared out of DNS and closes its published ports.
    pub(crate) fn drop_endpoints(&self, key: &ServiceKey) {
        self.set_dns_service(&key.deployment, &key.service, &[]);
        self.services.published.remove_service(key);
    }

    /// Opens (and closes) the service's published ports; a failure is shown by `services` and
    /// reported once as a `publish_failed` event, and retried on every pass.
    pub(crate) fn sync_published(&self, key: &ServiceKey, svc: &Service, st: &mut TaskState) {
        let res = self
            .services
            .published
            .sync(key, &svc.endpoints, |port, proto| {
                self.run_container_publishing(port, proto)
            });
        let err = res.err().map(|e| e.to_string());
        if err.is_some() && err != st.publish_error {
            let e = err.clone().unwrap_or_default();
            tracing::warn!(deployment = %key.deployment, service = %key.service, "{e}");
            self.services
                .events
                .publish(self.event("publish_failed", key).with("error", &e));
        }
        st.publish_error = err;
    }

    /// The `run -p` container publishing a host port, if one does (its DNAT rule would take
    /// the port's traffic from a service's listener).
    pub(crate) fn run_container_publishing(
        &self,
        port: u16,
        proto: zlayer_spec::Protocol,
    ) -> Option<String> {
        let mgr = self.networking().manager().ok()?;
        let want = match proto {
            zlayer_spec::Protocol::Tcp => zlayer_network::Protocol::Tcp,
            zlayer_spec::Protocol::Udp => zlayer_network::Protocol::Udp,
        };
        let sandbox = mgr.list_sandboxes().ok()?.into_iter().find(|s| {
            s.ports
                .iter()
                .any(|p| p.host_port == port && p.protocol == want)
        })?;
        let name = self
            .containers()
            .get(&sandbox.id)
            .ok()
            .flatten()
            .map(|c| c.name)
            .unwrap_or(sandbox.id);
        Some(format!("container {name}"))
    }
}
