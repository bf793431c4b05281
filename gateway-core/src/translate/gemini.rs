//! The gemini dialect's codec (being written).
