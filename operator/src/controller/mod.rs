//! The reconcile loop: the controller's watches (here), the reconcile
//! pipeline (`reconcile` drives `dereference`, `validate`, `build`, `apply`
//! and `update_status`), and deletion cleanup (`finalizer`).
//!
//! See docs/reconciler.md for the flow, the conditions and the events.

pub mod api;
pub mod apply;
pub mod backoff;
pub mod cluster_probe;
pub mod dereference;
pub mod error;
pub mod events;
pub mod expansion;
pub mod finalizer;
pub mod manage_crd;
pub mod reconcile;
pub mod restore;
pub mod rollout;
pub mod secret_watch;
pub mod status;
pub mod unchanged;
pub mod update_status;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::builders::BuildContext;
use crate::crd::DrasiStateStore;
use crate::labels::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::metrics::{Health, Metrics};
use api::ApiError;
use finalizer::FINALIZER;

pub use error::Error;
pub use reconcile::{error_policy, reconcile};

/// `namespace/name`, the key of per-store metrics and backoff.
pub fn store_key(store: &DrasiStateStore) -> String {
    format!(
        "{}/{}",
        store.namespace().unwrap_or_default(),
        store.name_any()
    )
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub build: BuildContext,
    pub metrics: Arc<Metrics>,
    pub events: events::EventPublisher,
    pub backoff: backoff::ErrorBackoff,
    /// Most store reconciles in flight at once (`--max-concurrent-reconciles`).
    pub max_concurrent_reconciles: u16,
    /// Asks a replicated store's replicas for `/v1/cluster`; HTTP unless a
    /// test replaces it.
    pub cluster_probe: Arc<dyn cluster_probe::ClusterProbe>,
}

/// Default of `--max-concurrent-reconciles`. Unbounded (kube-runtime's
/// default), a cold start or restart with 1,000 stores put every reconcile
/// in flight at once: each one's wall time became the whole wave's, and
/// their reads, desired objects and API connections all lived at the same
/// time (docs/benchmarks.md, "The operator at scale").
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 4;

impl Context {
    /// `instance` identifies this operator replica in events (the pod name).
    pub fn new(
        client: Client,
        build: BuildContext,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        Self {
            events: events::EventPublisher::new(client.clone(), instance),
            client,
            build,
            metrics,
            backoff: backoff::ErrorBackoff::default(),
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
            cluster_probe: Arc::new(cluster_probe::HttpClusterProbe),
        }
    }
}

/// A store as the controller caches it: malformed objects are kept (as
/// errors) instead of failing the watch.
pub type Guarded = DeserializeGuard<DrasiStateStore>;

/// Runs the controller until `shutdown` resolves and in-flight reconciles
/// finish. `health` turns ready once the DrasiStateStore cache is synced.
pub async fn run(
    ctx: Arc<Context>,
    watch_namespace: Option<&str>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Shared: both the store and the backup controller stop on it.
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let client = ctx.client.clone();
    // DeserializeGuard: one malformed object (e.g. written before a CRD
    // schema change) is reported on its own instead of failing the whole
    // watch and stopping reconciliation of every other store.
    let stores: Api<Guarded> = namespaced_or_all(&client, watch_namespace);
    let (reader, writer) = reflector::store();
    // Status writes do not change the generation; filtering on generation
    // keeps them from triggering another reconcile. Finalizer changes must
    // still pass: adding the finalizer is what starts the first apply.
    let trigger = watcher(stores, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        // Ready once the initial list is in the cache. Observed on the
        // stream rather than with `Store::wait_until_ready`, whose
        // one-shot channel wakes only one of several concurrent waiters
        // (the controller itself waits on it too).
        .inspect({
            let health = health.clone();
            move |event| {
                if matches!(event, Ok(watcher::Event::InitDone)) && !health.is_ready() {
                    tracing::info!("DrasiStateStore cache synced, ready");
                    health.set_ready(true);
                }
            }
        })
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            PredicateConfig::default(),
        );
    // Owned objects: only ours, so the caches stay small in big clusters.
    let owned = watcher::Config::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
        .any_semantic();
    let controller = Controller::for_stream(trigger, reader)
        .owns(
            namespaced_or_all::<StatefulSet>(&client, watch_namespace),
            owned.clone(),
        )
        .owns(
            namespaced_or_all::<Service>(&client, watch_namespace),
            owned.clone(),
        )
        .owns(namespaced_or_all::<Secret>(&client, watch_namespace), owned);
    // Secrets the stores reference but do not own (a user's token Secret, a
    // cert-manager certificate): any Secret, so metadata-only (no data or
    // caching of other applications' Secrets), mapped through the
    // controller's own store cache without further API calls.
    let stores_cache = controller.store();
    let controller = controller
        .watches(
            namespaced_or_all::<PartialObjectMeta<Secret>>(&client, watch_namespace),
            watcher::Config::default().any_semantic(),
            move |secret: PartialObjectMeta<Secret>| {
                let namespace = secret.namespace().unwrap_or_default();
                secret_watch::stores_referencing(
                    &stores_cache.state(),
                    &namespace,
                    &secret.name_any(),
                )
            },
        )
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.max_concurrent_reconciles),
        )
        .graceful_shutdown_on(shutdown.clone());

    // Backups run next to stores, under the same leadership and shutdown.
    let backups = crate::backup::controller::run(
        Arc::new(crate::backup::controller::BackupContext {
            client: ctx.client.clone(),
            build: ctx.build.clone(),
        }),
        watch_namespace,
        shutdown.clone(),
    );
    // Scheduled backups too; their context shares the store controller's
    // event reporter identity.
    let schedules = crate::schedule::controller::run(
        Arc::new(crate::schedule::controller::ScheduleContext::new(
            ctx.client.clone(),
            ctx.build.clone(),
            ctx.events.instance(),
        )),
        watch_namespace,
        shutdown.clone(),
    );
    let stores = controller
        .run(reconcile_guarded, error_policy_guarded, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(store = %object, "reconciled"),
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        });
    futures::join!(stores, backups, schedules);
    health.set_ready(false);
    tracing::info!("controller stopped");
}

fn namespaced_or_all<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Reconciles well-formed objects; reports malformed ones.
pub async fn reconcile_guarded(object: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    match &object.0 {
        Ok(store) => reconcile(Arc::new(store.clone()), ctx).await,
        Err(invalid) => {
            let key = format!(
                "{}/{}",
                object.namespace().unwrap_or_default(),
                object.name_any()
            );
            tracing::warn!(store = %key, error = %invalid, "cannot parse DrasiStateStore; skipping it");
            let note = format!("the object does not match the DrasiStateStore schema: {invalid}");
            ctx.events
                .warning(
                    &object.object_ref(&()),
                    events::EventReason::InvalidObject,
                    "Reconcile",
                    note,
                )
                .await;
            release_invalid(&object, &ctx).await?;
            Ok(Action::await_change())
        }
    }
}

/// A malformed object being deleted must not hang on our finalizer: it is
/// removed without cleanup (PVCs are retained).
async fn release_invalid(object: &Guarded, ctx: &Context) -> Result<(), Error> {
    let finalizers = object.finalizers();
    if object.meta().deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let namespace = object
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = object.name_any();
    let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
    // resourceVersion makes the merge patch conditional, so a concurrent
    // finalizer change by someone else is not overwritten.
    let patch = serde_json::json!({
        "metadata": { "finalizers": remaining, "resourceVersion": object.resource_version() }
    });
    let api: Api<Guarded> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::Api(ApiError::new(
                "removing the finalizer of",
                format!("DrasiStateStore {namespace}/{name}"),
                e,
            ))
        })
}

fn error_policy_guarded(object: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    match &object.0 {
        Ok(store) => error_policy(Arc::new(store.clone()), error, ctx),
        Err(_) => {
            let key = format!(
                "{}/{}",
                object.namespace().unwrap_or_default(),
                object.name_any()
            );
            Action::requeue(ctx.backoff.next_delay(&key))
        }
    }
}
