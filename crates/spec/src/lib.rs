//! zlayer-spec
