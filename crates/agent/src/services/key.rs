//! [`ServiceKey`]: which service of which deployment. A service name is unique only inside its
//! deployment, so everything the supervisor keeps per service (tasks, views, facts, backoff,
//! runs, DNS names, published ports) is keyed by both.

use std::fmt;

use super::labels::Owner;

/// A service of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub deployment: String,
    pub service: String,
}

impl ServiceKey {
    pub fn new(deployment: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            deployment: deployment.into(),
            service: service.into(),
        }
    }

    /// The service a supervisor-started container belongs to.
    pub fn of(owner: &Owner) -> Self {
        Self::new(owner.deployment.clone(), owner.service.clone())
    }

    /// Another service of the same deployment (a dependency).
    pub fn sibling(&self, service: &str) -> Self {
        Self::new(self.deployment.clone(), service)
    }
}

/// `deployment/service`, as events name a service.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.deployment, self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_sibling() {
        let k = ServiceKey::new("demo", "web");
        assert_eq!(k.to_string(), "demo/web");
        assert_eq!(k.sibling("db"), ServiceKey::new("demo", "db"));
    }
}
