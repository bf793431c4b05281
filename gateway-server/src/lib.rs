//! `gateway-server` as a library: the pieces of the deployable gateway (persistence, and later the
//! HTTP app and admin API), so that the binary, integration tests and embedders share them.

pub mod db;
