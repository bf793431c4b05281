//! The openai responses dialect's codec (being written).
