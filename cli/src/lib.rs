//! `kubectl drasi-store`: the admin CLI of drasi-store (docs/cli.md).
//!
//! Layout:
//! - [`args`]: the command line (clap);
//! - [`cluster`]: the Kubernetes client, the namespace and the typed APIs;
//! - [`server`]: talking to a store's server (metrics, export, import) as
//!   "a base URL + the store's token", and finding both for a store;
//! - [`tunnel`]: the port-forward that gives a local base URL for a pod;
//! - one module per command: [`status`], [`backup`], [`restore`],
//!   [`pause`], [`rotate`], [`transfer`], [`report`] (with [`redact`]);
//! - [`table`], [`format`]: plain-text rendering.
//!
//! Every command is a library function taking a [`cluster::Cluster`], so
//! the tests run them against the operator's simulated API server.

pub mod args;
pub mod backup;
pub mod cluster;
pub mod format;
pub mod pause;
pub mod redact;
pub mod report;
pub mod restore;
pub mod rotate;
pub mod run;
pub mod server;
pub mod status;
pub mod table;
pub mod transfer;
pub mod tunnel;
