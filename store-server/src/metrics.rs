//! Prometheus metrics, served at `GET /metrics` in the text format.
//! Gauges that mirror the database (`keys`, `stores`, file size) are read
//! when scraped, from O(1) counters, so they cost nothing per request.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use drasi_store_protocol::ClusterRole;

use crate::engine::Engine;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// The Raft gauges of a replicated store, refreshed when scraped.
struct RaftMetrics {
    term: Gauge,
    role: Family<RoleLabels, Gauge>,
    commit_index: Gauge,
    applied_index: Gauge,
    replication_lag: Family<PeerLabels, Gauge>,
    elections: Gauge,
}

type HistogramFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 25 µs .. ~13 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub commit_group_size: Histogram,
    pub commit_duration: Histogram,
    pub gc_entries_deleted: Counter,
    pub journal_checkpoints: Counter,
    pub journal_replayed_records: Counter,
    database_file_bytes: Gauge,
    keys: Gauge,
    stores: Gauge,
    garbage_partitions: Gauge,
    raft: RaftMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drasi_store");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by operation and response status",
            requests.clone(),
        );
        let request_duration: HistogramFamily =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from routing a request to producing its response",
            request_duration.clone(),
        );
        let commit_group_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_group_size",
            "Write requests committed together in one transaction",
            commit_group_size.clone(),
        );
        let commit_duration = latency_histogram();
        registry.register(
            "commit_duration_seconds",
            "Time to apply and commit one group, its durable journal write or fsync included",
            commit_duration.clone(),
        );
        let gc_entries_deleted = Counter::default();
        registry.register(
            "gc_entries_deleted",
            "Entries of cleared stores deleted by the background collector",
            gc_entries_deleted.clone(),
        );
        let journal_checkpoints = Counter::default();
        registry.register(
            "journal_checkpoints",
            "Durable database commits after which the commit journal started over",
            journal_checkpoints.clone(),
        );
        let journal_replayed_records = Counter::default();
        registry.register(
            "journal_replayed_records",
            "Commit journal records replayed at startup or after reopening the database",
            journal_replayed_records.clone(),
        );
        let database_file_bytes = Gauge::default();
        registry.register(
            "database_file_bytes",
            "Size of the redb database file",
            database_file_bytes.clone(),
        );
        let keys = Gauge::default();
        registry.register("keys", "Keys across all stores", keys.clone());
        let stores = Gauge::default();
        registry.register("stores", "Stores holding at least one key", stores.clone());
        let garbage_partitions = Gauge::default();
        registry.register(
            "garbage_partitions",
            "Cleared stores whose entries still await background deletion",
            garbage_partitions.clone(),
        );
        let raft = RaftMetrics {
            term: Gauge::default(),
            role: Family::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            replication_lag: Family::default(),
            elections: Gauge::default(),
        };
        registry.register(
            "raft_term",
            "Current Raft term (replicated stores)",
            raft.term.clone(),
        );
        registry.register(
            "raft_role",
            "1 for this node's current Raft role, 0 for the others",
            raft.role.clone(),
        );
        registry.register(
            "raft_commit_index",
            "Last Raft log index this node knows to be committed",
            raft.commit_index.clone(),
        );
        registry.register(
            "raft_applied_index",
            "Last Raft log index applied to this node's data",
            raft.applied_index.clone(),
        );
        registry.register(
            "raft_replication_lag",
            "On the leader: log entries each peer is behind",
            raft.replication_lag.clone(),
        );
        // A gauge, not a counter: it is copied from the node's own count
        // when scraped.
        registry.register(
            "raft_elections",
            "Elections this node started since it started (became candidate)",
            raft.elections.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            commit_group_size,
            commit_duration,
            gc_entries_deleted,
            journal_checkpoints,
            journal_replayed_records,
            database_file_bytes,
            keys,
            stores,
            garbage_partitions,
            raft,
        }
    }

    pub fn observe_request(&self, operation: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { operation, status })
            .inc();
        self.request_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_commit(&self, group_size: usize, elapsed: Duration) {
        self.commit_group_size.observe(group_size as f64);
        self.commit_duration.observe(elapsed.as_secs_f64());
    }

    /// Refreshes the database gauges and renders everything.
    pub fn render(&self, engine: &Engine) -> String {
        self.database_file_bytes
            .set(i64::try_from(engine.file_bytes()).unwrap_or(i64::MAX));
        match engine.totals() {
            Ok(t) => {
                self.keys.set(i64::try_from(t.keys).unwrap_or(i64::MAX));
                self.stores.set(i64::try_from(t.stores).unwrap_or(i64::MAX));
            }
            Err(err) => tracing::warn!(error = %err, "reading key totals for /metrics failed"),
        }
        if let Ok(n) = engine.pending_garbage() {
            self.garbage_partitions
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(node) = engine.replica() {
            let info = node.cluster_info();
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.raft.term.set(gauge(info.term));
            for role in [
                ClusterRole::Leader,
                ClusterRole::Follower,
                ClusterRole::Candidate,
                ClusterRole::Learner,
            ] {
                let name = match role {
                    ClusterRole::Leader => "leader",
                    ClusterRole::Follower => "follower",
                    ClusterRole::Candidate => "candidate",
                    ClusterRole::Learner => "learner",
                };
                self.raft
                    .role
                    .get_or_create(&RoleLabels { role: name })
                    .set(i64::from(role == info.role));
            }
            self.raft.commit_index.set(gauge(info.commit_index));
            self.raft.applied_index.set(gauge(info.applied_index));
            // Only the leader knows its peers' progress: drop stale series
            // after losing leadership.
            self.raft.replication_lag.clear();
            for (peer, lag) in &info.lag {
                self.raft
                    .replication_lag
                    .get_or_create(&PeerLabels {
                        peer: peer.to_string(),
                    })
                    .set(gauge(*lag));
            }
            self.raft.elections.set(gauge(node.elections()));
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
