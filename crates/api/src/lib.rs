//! zlayer-api
