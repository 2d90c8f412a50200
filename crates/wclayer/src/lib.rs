//! zlayer-wclayer
