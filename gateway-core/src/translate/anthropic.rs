//! The anthropic dialect's codec (being written).
