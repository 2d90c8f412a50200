//! The event stream: an in-memory broadcast of what happens to containers and services, for
//! `GET /v1/events` and `zlayer-agent events`. Not persisted: a subscriber sees what happens
//! from the moment it subscribes (as `docker events` without `--since`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// One event. `kind` is `container` or `service`; `action` e.g. `created`, `started`, `died`,
/// `oom`, `health_status`, `pause`, `unpause`, `rename` (with `oldName`), `scaled`, `rolled`,
/// `crash_loop`, `rollout_failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// RFC 3339 time with milliseconds.
    pub time: String,
    pub kind: String,
    pub action: String,
    /// Container id, or `deployment/service` for service events.
    pub id: String,
    /// Container name (or the service's name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Details: `deployment`, `service`, `exit_code`, `health`, `replicas`, `error`...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    pub fn new(kind: &str, action: &str, id: &str, name: &str) -> Self {
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kind: kind.to_string(),
            action: action.to_string(),
            id: id.to_string(),
            name: name.to_string(),
            attributes: BTreeMap::new(),
        }
    }

    /// Adds an attribute.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.attributes.insert(key.to_string(), value.to_string());
        self
    }
}

/// The broadcast channel. Slow subscribers lose the oldest events (and are told how many they
/// missed) rather than holding up the daemon.
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    /// Publishes `event` (a no-op without subscribers) and logs it.
    pub fn publish(&self, event: Event) {
        tracing::debug!(kind = %event.kind, action = %event.action, id = %event.id, "event");
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_in_order() {
        let bus = EventBus::new();
        bus.publish(Event::new("container", "created", "x", "n")); // nobody listens: dropped
        let mut rx = bus.subscribe();
        bus.publish(Event::new("container", "started", "abc", "web-0").with("service", "web"));
        bus.publish(Event::new("service", "scaled", "demo/web", "web").with("replicas", 3));
        let a = rx.recv().await.unwrap();
        assert_eq!(
            (a.action.as_str(), a.attributes["service"].as_str()),
            ("started", "web")
        );
        let b = rx.recv().await.unwrap();
        assert_eq!(b.attributes["replicas"], "3");
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains("\"action\":\"scaled\""), "{json}");
    }
}
