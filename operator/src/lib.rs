//! drasi-store-operator: reconciles `DrasiStateStore` custom resources into
//! drasi-store-server StatefulSets, Services and Secrets.
//!
//! Layout (as in kube-rs's controller-rs and the Stackable operators):
//! - [`crd`]: the custom resource types and the generated CRD;
//! - [`validated`]: a store plus what it references -> [`validated::ValidatedStore`];
//! - [`labels`], [`builders`]: pure "desired state" functions, validated store -> objects;
//! - [`backup`]: `DrasiStateStoreBackup`: plan, Job builder, summary;
//! - [`render`]: the `render` command, validation and builders without a cluster;
//! - [`rotation`]: the token rotation state machine (pure, clock as a parameter);
//! - [`controller`]: the reconcile loop (reads, applies, status, finalizer);
//! - [`cli`], [`metrics`], [`leader`], [`rbac`]: process wiring.

pub mod backup;
pub mod builders;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod rotation;
pub mod validated;
