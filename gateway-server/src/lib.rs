//! `gateway-server` as a library: the pieces of the deployable gateway (settings, persistence,
//! the HTTP app), so that the binary, integration tests and embedders share them.

pub mod app;
pub mod db;
pub mod serve;
pub mod settings;
pub mod workers;
