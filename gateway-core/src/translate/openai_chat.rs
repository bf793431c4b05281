//! The openai chat dialect's codec (being written).
