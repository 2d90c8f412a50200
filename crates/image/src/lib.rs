//! zlayer-image
