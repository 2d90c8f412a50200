//! Container labels that tie a container to its deployment, service and replica slot. The
//! container records (and their labels) are the source of truth for what runs: after a daemon
//! restart the supervisor finds its replicas by these labels, never by names.

use std::collections::BTreeMap;

use super::state::OwnerKind;

pub const DEPLOYMENT: &str = "zlayer.deployment";
pub const SERVICE: &str = "zlayer.service";
/// Replica slot (0..replicas) for services; run number for jobs and cron.
pub const REPLICA: &str = "zlayer.replica";
pub const SPEC_HASH: &str = "zlayer.spec-hash";
/// `service`, `job`, `cron` or `init`.
pub const KIND: &str = "zlayer.kind";

/// Where a container belongs, read back from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub deployment: String,
    pub service: String,
    pub replica: u32,
    pub spec_hash: String,
    pub kind: OwnerKind,
}

impl Owner {
    /// The owner of a container, or `None` for containers not started by the supervisor.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Owner> {
        Some(Owner {
            deployment: labels.get(DEPLOYMENT)?.clone(),
            service: labels.get(SERVICE)?.clone(),
            replica: labels.get(REPLICA)?.parse().ok()?,
            spec_hash: labels.get(SPEC_HASH).cloned().unwrap_or_default(),
            // Containers labelled before kinds existed are replicas; an unknown kind is not ours.
            kind: match labels.get(KIND) {
                Some(k) => k.parse().ok()?,
                None => OwnerKind::Service,
            },
        })
    }

    pub fn to_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (DEPLOYMENT.to_string(), self.deployment.clone()),
            (SERVICE.to_string(), self.service.clone()),
            (REPLICA.to_string(), self.replica.to_string()),
            (SPEC_HASH.to_string(), self.spec_hash.clone()),
            (KIND.to_string(), self.kind.as_str().to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_foreign_containers() {
        let o = Owner {
            deployment: "demo".into(),
            service: "web".into(),
            replica: 1,
            spec_hash: "sha256:ab".into(),
            kind: OwnerKind::Job,
        };
        assert_eq!(Owner::from_labels(&o.to_labels()), Some(o.clone()));
        assert_eq!(Owner::from_labels(&BTreeMap::new()), None);
        let mut l = BTreeMap::from([(DEPLOYMENT.to_string(), "d".to_string())]);
        l.insert(SERVICE.into(), "s".into());
        l.insert(REPLICA.into(), "x".into());
        assert_eq!(Owner::from_labels(&l), None);
        let mut old = o.to_labels();
        old.remove(KIND);
        assert_eq!(Owner::from_labels(&old).unwrap().kind, OwnerKind::Service);
    }
}
