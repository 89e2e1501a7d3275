//! The operator CLI. [`up`] runs the whole suite in one process: each service on its own port,
//! talking real gRPC over loopback, with SQLite files under `.snapkeeper/` by default.
//! [`health`] probes a service or the gateway for containers and scripts. [`check_cloud`] checks
//! what Snapkeeper needs from a cloud with the services' own OpenStack client.
//!
//! The other subcommands are thin gRPC clients of the running suite ([`clients`] connects and
//! reports failures naming the service and URL): [`run`] starts and watches a run, [`runs`] lists
//! runs, [`compliance`] reports compliance, [`policy`] validates rules files (also offline) and
//! explains decisions, [`forecast`] forecasts quota. [`output`] holds the tables, CSV and times.

pub mod check_cloud;
pub mod clients;
pub mod compliance;
pub mod forecast;
pub mod health;
pub mod output;
pub mod policy;
pub mod run;
pub mod runs;
pub mod up;
