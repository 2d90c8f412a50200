//! Per-node limits (`limits` in the daemon's config file, see [`crate::config::Limits`]): what
//! a deployment asks for, and the errors that name the limit and the key that sets it.

use zlayer_spec::{Deployment, Kind, Service};

use crate::error::AgentError;

/// The config key of the container limit, as error messages name it.
pub const MAX_CONTAINERS_KEY: &str = "limits.max_containers";
/// The config key of the replica limit.
pub const MAX_REPLICAS_KEY: &str = "limits.max_replicas";

/// Containers a service keeps: its replicas; one for a job or a cron entry (one run at a time
/// by default; a run that overlaps is still one container of the node's limit at its start).
pub fn replicas_of(s: &Service) -> usize {
    match s.kind {
        Kind::Service => s.desired_replicas() as usize,
        Kind::Job | Kind::Cron => 1,
    }
}

/// Replicas all services of `d` ask for.
pub fn replicas_of_deployment(d: &Deployment) -> usize {
    d.services.values().map(replicas_of).sum()
}

/// `create`/`run` (or a replica start) on a node that has `max` containers.
pub fn too_many_containers(max: usize) -> AgentError {
    AgentError::conflict(format!(
        "this node has {max} containers, its limit ({MAX_CONTAINERS_KEY} = {max} in the daemon's config file): remove containers (`rm`, `undeploy`) or raise the limit"
    ))
}

/// Checks that `asked` replicas in total stay within `max`; `what` says who asks (the
/// service and where its `replicas` is written), `others` how many the node's other services
/// ask for.
pub fn check_replicas(
    asked: usize,
    others: usize,
    max: usize,
    what: &str,
) -> Result<(), AgentError> {
    if asked.saturating_add(others) <= max {
        return Ok(());
    }
    let context = if others > 0 {
        format!(", and the node's other services ask for {others}")
    } else {
        String::new()
    };
    Err(AgentError::invalid(format!(
        "{what}: {asked} replicas{context}: over this node's limit of {max} ({MAX_REPLICAS_KEY} in the daemon's config file)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_the_limit_and_its_key() {
        assert!(check_replicas(10, 0, 10, "x").is_ok());
        let e = check_replicas(100_000, 3, 1000, "demo.yaml:4:15: service \"web\"").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidInput);
        assert!(e.message.contains("100000 replicas"), "{}", e.message);
        assert!(
            e.message.contains("other services ask for 3"),
            "{}",
            e.message
        );
        assert!(e.message.contains("limits.max_replicas"), "{}", e.message);
        assert!(e.message.contains("demo.yaml:4:15"), "{}", e.message);
        assert!(check_replicas(usize::MAX, 1, usize::MAX, "x").is_err());
        let e = too_many_containers(1000);
        assert!(
            e.message.contains("limits.max_containers = 1000"),
            "{}",
            e.message
        );
    }
}
