//! Lease-based leader election, so two operator replicas never reconcile at once.
//!
//! kube-rs has no built-in leader election; `kube-lease-manager` keeps a
//! `coordination.k8s.io/v1` Lease with server-side apply and tolerates clock
//! skew between nodes (the `grace` period).
//!
//! Policy on lost leadership: the controller is dropped at once (another
//! replica may already be reconciling) and the process exits non-zero, so the
//! kubelet restarts the pod into a clean standby state instead of this process
//! trying to rebuild its caches and queues in place.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

/// Seconds a lease stays valid without renewal; a crashed leader is replaced
/// after at most this long.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Seconds before expiry at which the holder renews; also the clock skew tolerated.
pub const LEASE_GRACE_SECONDS: u64 = 5;
/// How long shutdown waits for the lease to be released before giving up.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot set up leader election Lease {namespace}/{lease}: {source}")]
    Setup {
        namespace: String,
        lease: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("lost leadership of Lease {0}; exiting so the pod restarts as a standby")]
    LeadershipLost(String),
    #[error("leader election for Lease {0} stopped unexpectedly")]
    ElectionStopped(String),
}

/// How [`lead_while`] finished without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderExit {
    /// Shutdown was requested before this replica became the leader.
    ShutdownWhileStandby,
    /// This replica led and the work finished (after a shutdown request).
    Finished,
}

/// Holder identity: the pod name from the downward API (`POD_NAME`), else the
/// host name, which is the pod name inside Kubernetes too.
pub fn holder_identity(pod_name: Option<&str>, hostname: Option<&str>) -> String {
    [pod_name, hostname]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("drasi-store-operator-{}", std::process::id()))
}

/// Runs `work` while this process holds the Lease.
///
/// `became_leader` is called once leadership is acquired (the process stops
/// being a standby). `work` receives a shutdown receiver it must honour.
pub async fn run_with_leader_election<W, Fut>(
    client: Client,
    config: LeaderElectionConfig,
    shutdown: watch::Receiver<bool>,
    became_leader: impl FnOnce(),
    work: W,
) -> Result<LeaderExit, LeaderError>
where
    W: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(LEASE_DURATION_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await
        .map_err(|source| LeaderError::Setup {
            namespace: config.namespace.clone(),
            lease: config.lease_name.clone(),
            source,
        })?;
    let lease = format!("{}/{}", config.namespace, config.lease_name);
    tracing::info!(%lease, identity = %config.identity, "waiting for leadership");
    let (leader_rx, task) = manager.watch().await;
    let result = lead_while(leader_rx, shutdown, &lease, became_leader, work).await;
    // The receiver is dropped by now; the manager task releases the lease when
    // its channel closes. Bounded, so a dead API server cannot hang shutdown.
    match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
        Ok(Ok(Ok(_))) => tracing::info!(%lease, "released leadership"),
        Ok(Ok(Err(error))) => tracing::warn!(%lease, %error, "could not release the lease"),
        Ok(Err(error)) => tracing::warn!(%lease, %error, "lease manager task failed"),
        Err(_) => tracing::warn!(%lease, "timed out releasing the lease; it expires on its own"),
    }
    result
}

/// The leadership state machine over the lease manager's channel, separate
/// from the Kubernetes plumbing so it can be tested.
pub async fn lead_while<W, Fut>(
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    lease: &str,
    became_leader: impl FnOnce(),
    work: W,
) -> Result<LeaderExit, LeaderError>
where
    W: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    // Standby until the lease is ours.
    loop {
        if *shutdown.borrow() {
            return Ok(LeaderExit::ShutdownWhileStandby);
        }
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    return Err(LeaderError::ElectionStopped(lease.to_string()));
                }
            }
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!(%lease, "acquired leadership, starting the controller");
    became_leader();
    let work = work(shutdown.clone());
    tokio::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => return Ok(LeaderExit::Finished),
            changed = leader.changed() => {
                // A closed channel means the manager task died: no renewals
                // any more, so another replica may take over soon.
                if changed.is_err() || !*leader.borrow_and_update() {
                    tracing::error!(%lease, "lost leadership, stopping the controller");
                    return Err(LeaderError::LeadershipLost(lease.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn identity_prefers_pod_name_then_hostname() {
        assert_eq!(holder_identity(Some("op-0"), Some("host")), "op-0");
        assert_eq!(holder_identity(Some(" "), Some("host")), "host");
        assert!(holder_identity(None, None).starts_with("drasi-store-operator-"));
    }

    #[tokio::test]
    async fn standby_exits_cleanly_on_shutdown_without_running_work() {
        let (_leader_tx, leader_rx) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let ran = Arc::new(AtomicBool::new(false));
        let ran2 = ran.clone();
        let task = tokio::spawn(async move {
            lead_while(
                leader_rx,
                shutdown_rx,
                "ns/l",
                || {},
                |_| async move {
                    ran2.store(true, Ordering::SeqCst);
                },
            )
            .await
        });
        shutdown_tx.send(true).unwrap();
        let exit = task.await.unwrap().unwrap();
        assert_eq!(exit, LeaderExit::ShutdownWhileStandby);
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn leader_runs_work_until_it_finishes_after_shutdown() {
        let (leader_tx, leader_rx) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (became_tx, became_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            lead_while(
                leader_rx,
                shutdown_rx,
                "ns/l",
                move || became_tx.send(()).unwrap(),
                |mut stop| async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )
            .await
        });
        leader_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), became_rx)
            .await
            .expect("became leader")
            .unwrap();
        assert!(!task.is_finished(), "work runs until shutdown");
        shutdown_tx.send(true).unwrap();
        assert_eq!(task.await.unwrap().unwrap(), LeaderExit::Finished);
    }

    #[tokio::test]
    async fn losing_leadership_stops_work_with_an_error() {
        let (leader_tx, leader_rx) = watch::channel(true);
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            lead_while(
                leader_rx,
                shutdown_rx,
                "ns/l",
                || {},
                |_| async move {
                    started_tx.send(()).unwrap();
                    std::future::pending::<()>().await
                },
            )
            .await
        });
        // Lose leadership only once the work runs, i.e. once it was had.
        tokio::time::timeout(Duration::from_secs(10), started_rx)
            .await
            .expect("work started")
            .unwrap();
        leader_tx.send(false).unwrap();
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(LeaderError::LeadershipLost(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_dead_lease_manager_is_an_error_for_a_standby() {
        let (leader_tx, leader_rx) = watch::channel(false);
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        drop(leader_tx);
        let result = lead_while(leader_rx, shutdown_rx, "ns/l", || {}, |_| async {}).await;
        assert!(matches!(result, Err(LeaderError::ElectionStopped(_))));
    }
}
