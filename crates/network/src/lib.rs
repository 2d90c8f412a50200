//! zlayer-network
