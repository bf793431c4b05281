//! Sending requests upstream.
pub mod url;
