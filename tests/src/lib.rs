//! Helpers shared by the cross-crate tests and the benchmark.

pub mod bench;
pub mod cluster;
pub mod partition;
pub mod server_process;
pub mod test_ca;
pub mod wal_events;

pub use server_process::{ServerProcess, ServerProcessBuilder};
