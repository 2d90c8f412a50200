//! The agent: one value that owns the node's state and answers every operation.

use crate::config::AgentConfig;
use crate::error::Result;

/// The node agent. Cheap to share (`Arc<Agent>`); every method is safe to call concurrently.
pub struct Agent {
    config: AgentConfig,
}

impl Agent {
    /// Opens (creating if needed) the agent's directories and state.
    pub fn open(config: AgentConfig) -> Result<Self> {
        config.paths.create_all()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }
}
