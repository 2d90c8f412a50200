//! zlayer-testkit
