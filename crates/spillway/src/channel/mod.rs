//! Bounded channels (filled by the channel work).
