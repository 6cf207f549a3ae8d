//! Prometheus metrics of the reconciler and the `/metrics`, `/healthz` and
//! `/readyz` endpoints.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use strum::IntoEnumIterator;

use crate::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// The operator's metrics; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<ResultLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
    duration: Histogram,
    managed: Family<PhaseLabels, Gauge>,
    /// Last phase per store (`namespace/name`); the gauge is derived from it so
    /// a store moving between phases is never counted twice.
    phases: Mutex<HashMap<String, Phase>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drasi_store_operator");
        let reconciliations = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ReasonLabels, Counter>::default();
        // 5 ms .. ~41 s: a reconcile is a handful of API calls, slow ones hit timeouts.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let managed = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "reconciliations",
            "Reconciliations of DrasiStateStore resources by result",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by error reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation",
            duration.clone(),
        );
        registry.register(
            "managed_stores",
            "DrasiStateStore resources managed by this operator, by phase",
            managed.clone(),
        );
        // Every phase always has a series: a missing series reads as "no
        // data", a zero as "none".
        for phase in Phase::iter() {
            managed
                .get_or_create(&PhaseLabels {
                    phase: phase.to_string(),
                })
                .set(0);
        }
        Self {
            registry,
            reconciliations,
            errors,
            duration,
            managed,
            phases: Mutex::new(HashMap::new()),
        }
    }

    /// Records a finished reconciliation; `error_reason` is `None` on success.
    pub fn observe_reconcile(&self, elapsed: Duration, error_reason: Option<&str>) {
        self.duration.observe(elapsed.as_secs_f64());
        let result = if error_reason.is_some() {
            "error"
        } else {
            "success"
        };
        self.reconciliations
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        if let Some(reason) = error_reason {
            self.errors
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc();
        }
    }

    /// Remembers the phase of a store; `None` forgets it (the store is gone).
    pub fn set_phase(&self, store: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        match phase {
            Some(phase) => {
                phases.insert(store.to_string(), phase);
            }
            None => {
                phases.remove(store);
            }
        }
        let mut counts: BTreeMap<&'static str, i64> =
            Phase::iter().map(|p| (p.into(), 0)).collect();
        for phase in phases.values() {
            *counts.entry((*phase).into()).or_default() += 1;
        }
        for (phase, count) in counts {
            self.managed
                .get_or_create(&PhaseLabels {
                    phase: phase.to_owned(),
                })
                .set(count);
        }
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Readiness of the process, as `/readyz` reports it.
///
/// Ready means "working as intended": the leader once the controller's
/// DrasiStateStore cache has completed its initial list, or a standby
/// replica once it is waiting for the Lease (it is healthy and can take
/// over). Not ready while starting, or while a leader is still syncing.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The router of the metrics/health endpoint.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(AppState { metrics, health })
}

/// Serves [`router`] on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, metrics, health, shutdown).await
}

/// [`serve`] on an already bound listener.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz_handler(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_results_errors_and_durations() {
        let metrics = Metrics::new();
        metrics.observe_reconcile(Duration::from_millis(20), None);
        metrics.observe_reconcile(Duration::from_millis(30), Some("Kube"));
        let text = metrics.encode();
        assert!(text.contains("drasi_store_operator_reconciliations_total{result=\"success\"} 1"));
        assert!(text.contains("drasi_store_operator_reconciliations_total{result=\"error\"} 1"));
        assert!(text.contains("drasi_store_operator_reconcile_errors_total{reason=\"Kube\"} 1"));
        assert!(text.contains("drasi_store_operator_reconcile_duration_seconds_count 2"));
    }

    #[test]
    fn managed_stores_follow_phase_changes_without_double_counting() {
        let metrics = Metrics::new();
        assert!(
            metrics
                .encode()
                .contains("drasi_store_operator_managed_stores{phase=\"Ready\"} 0")
        );
        metrics.set_phase("ns/a", Some(Phase::Provisioning));
        metrics.set_phase("ns/b", Some(Phase::Provisioning));
        metrics.set_phase("ns/a", Some(Phase::Ready));
        let text = metrics.encode();
        assert!(text.contains("drasi_store_operator_managed_stores{phase=\"Ready\"} 1"));
        assert!(text.contains("drasi_store_operator_managed_stores{phase=\"Provisioning\"} 1"));
        metrics.set_phase("ns/b", None);
        let text = metrics.encode();
        assert!(text.contains("drasi_store_operator_managed_stores{phase=\"Provisioning\"} 0"));
    }

    /// Minimal HTTP/1.1 GET over a raw socket: status code and body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    #[tokio::test]
    async fn endpoints_report_health_readiness_and_metrics() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, metrics.clone(), health.clone(), async {
            let _ = stop_rx.await;
        }));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        metrics.observe_reconcile(Duration::from_millis(5), None);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("drasi_store_operator_reconciliations_total"),
            "{body}"
        );
        assert_eq!(get(addr, "/nope").await.0, 404);

        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
