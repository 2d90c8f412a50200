//! zlayer-agent
