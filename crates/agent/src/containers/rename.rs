//! `rename OLD NEW`: a container's name changes, in the state database and on its bridge
//! network's DNS server (a running container answers to the new name at once, and no
//! longer to the old one). The id, the files and the running processes are untouched.

use std::sync::Arc;

use super::names::validate_name;
use super::record::{short_id, ContainerState};
use crate::error::{AgentError, Result};
use crate::services::events::Event;
use crate::Agent;

impl Agent {
    /// `rename`: a taken name is a conflict naming its holder; the same name is invalid,
    /// as docker says.
    pub async fn rename_container(self: &Arc<Self>, key: &str, new_name: &str) -> Result<()> {
        validate_name(new_name)?;
        let r = self.containers().resolve(key)?;
        self.await_recovered(&r).await?;
        let (id, new_name) = (r.id.clone(), new_name.to_string());
        self.run_blocking(move |a| {
            let r = a.containers().resolve(&id)?;
            if r.name == new_name {
                return Err(AgentError::invalid(format!(
                    "container {} is already named {new_name:?}",
                    short_id(&r.id)
                )));
            }
            if let Err(holder) = a.containers().rename(&r.id, &new_name)? {
                return Err(AgentError::conflict(format!(
                    "the container name {new_name:?} is already in use by container {}; \
                     remove it or pick another name",
                    short_id(&holder)
                )));
            }
            if r.state == ContainerState::Running {
                a.unregister_dns(&r.id, &r.name);
                a.register_dns(&r.id, &new_name);
                // An exit recorded meanwhile unregistered the old name: the new one goes too.
                let now = a.containers().get(&r.id)?;
                if now.is_none_or(|n| n.state != ContainerState::Running) {
                    a.unregister_dns(&r.id, &new_name);
                }
            }
            tracing::info!(id = %short_id(&r.id), old = %r.name, new = %new_name, "container renamed");
            // docker's `rename` event, with the old name beside the new one.
            a.services.events.publish(
                Event::new("container", "rename", &r.id, &new_name).with("oldName", &r.name),
            );
            Ok(())
        })
        .await
    }
}
