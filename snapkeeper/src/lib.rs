//! The operator CLI. [`up`] runs the whole suite in one process: each service on its own port,
//! talking real gRPC over loopback, with SQLite files under `.snapkeeper/` by default.
//! [`health`] probes a service or the gateway for containers and scripts.

pub mod health;
pub mod up;
