//! Volume expansion when `spec.storage.size` grows.
//!
//! A StatefulSet's `volumeClaimTemplates` are immutable, so growing the
//! volume takes three steps: patch every existing PVC to the new size (the
//! CSI driver and kubelet resize the volume and file system), delete the
//! StatefulSet with `propagationPolicy: Orphan` (its pods and PVCs stay and
//! keep serving), and re-create it from the new template; it adopts the
//! running pods again through its selector.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::apply::{self, describe};
use super::error::Error;
use super::status::{Reasoned, reasons};
use crate::crd::quantity_greater;

/// Name of the volumeClaimTemplate holding the database.
pub const DATA_VOLUME: &str = "data";

/// What to do about the data volumes before applying the StatefulSet.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpansionPlan {
    /// The template size did not grow: apply as usual.
    NotNeeded,
    /// The volume must grow but cannot; leave the StatefulSet alone.
    Blocked(Reasoned),
    /// Patch these PVCs to `to`, then re-create the StatefulSet.
    Expand {
        from: Quantity,
        to: Quantity,
        pvcs: Vec<String>,
    },
}

/// The storage a PVC (or a volumeClaimTemplate) requests.
fn requested_storage(pvc: &PersistentVolumeClaim) -> Option<&Quantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

/// The requested size of the `data` template of a StatefulSet.
pub fn template_size(sts: &StatefulSet) -> Option<Quantity> {
    let template = sts
        .spec
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME))?;
    requested_storage(template).cloned()
}

/// PVC names the StatefulSet controller creates: `data-<sts>-<ordinal>`.
pub fn pvc_names(sts: &StatefulSet) -> Vec<String> {
    let replicas = sts.spec.replicas.unwrap_or(1).max(0);
    (0..replicas)
        .map(|ordinal| format!("{DATA_VOLUME}-{}-{ordinal}", sts.name_any()))
        .collect()
}

/// Decides whether the existing StatefulSet's volumes must grow to match
/// `desired`, reading the PVCs and their StorageClass.
pub async fn plan(
    client: &Client,
    namespace: &str,
    existing: &StatefulSet,
    desired: &StatefulSet,
) -> Result<ExpansionPlan, Error> {
    let (Some(from), Some(to)) = (template_size(existing), template_size(desired)) else {
        return Ok(ExpansionPlan::NotNeeded);
    };
    // Shrinking is rejected by the CRD; an unparsable size is left for the
    // API server to reject when the StatefulSet is applied.
    if quantity_greater(&to, &from) != Some(true) {
        return Ok(ExpansionPlan::NotNeeded);
    }
    let mut pvcs = Vec::new();
    for name in pvc_names(existing) {
        let Some(pvc) = apply::get_opt::<PersistentVolumeClaim>(client, namespace, &name).await?
        else {
            // Never created (pod not scheduled yet): the new template covers it.
            continue;
        };
        let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
        let Some(class) = class.filter(|c| !c.is_empty()) else {
            return Ok(ExpansionPlan::Blocked(Reasoned::new(
                reasons::VOLUME_EXPANSION_NOT_SUPPORTED,
                format!(
                    "storage.size grew from {} to {} but PVC {name} has no StorageClass (a \
                     pre-provisioned volume), so the operator cannot expand it; nothing was \
                     changed and the server keeps running on the current volume. storage.size \
                     cannot be lowered again (the CRD forbids shrinking)",
                    from.0, to.0
                ),
            )));
        };
        let classes: Api<StorageClass> = Api::all(client.clone());
        let storage_class = classes
            .get_opt(&class)
            .await
            .map_err(|e| Error::kube("reading", format!("StorageClass {class}"), e))?;
        let expandable = storage_class
            .as_ref()
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
        if !expandable {
            return Ok(ExpansionPlan::Blocked(Reasoned::new(
                reasons::VOLUME_EXPANSION_NOT_SUPPORTED,
                format!(
                    "storage.size grew from {} to {} but StorageClass {class} of PVC {name} does \
                     not set allowVolumeExpansion: true; nothing was changed and the server keeps \
                     running on the current volume. Set allowVolumeExpansion: true on the \
                     StorageClass (if its driver supports expansion) and the operator expands \
                     the volume within a minute; storage.size cannot be lowered again (the CRD \
                     forbids shrinking)",
                    from.0, to.0
                ),
            )));
        }
        pvcs.push(name);
    }
    Ok(ExpansionPlan::Expand { from, to, pvcs })
}

/// Patches the PVCs and deletes the StatefulSet, orphaning its pods. The
/// caller re-applies the StatefulSet once the old one is gone.
pub async fn execute(
    client: &Client,
    namespace: &str,
    statefulset: &str,
    to: &Quantity,
    pvcs: &[String],
) -> Result<(), Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    // A merge patch of only the request: the StatefulSet controller owns the
    // rest of the PVC, and a second pass re-sends the same size harmlessly.
    let patch = serde_json::json!({ "spec": { "resources": { "requests": { "storage": to } } } });
    for name in pvcs {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                Error::kube(
                    "expanding",
                    describe::<PersistentVolumeClaim>(namespace, name),
                    e,
                )
            })?;
    }
    apply::delete::<StatefulSet>(client, namespace, statefulset, &DeleteParams::orphan()).await
}

/// `VolumeExpanding` progress while a PVC's capacity is below its request.
pub fn pvc_progress(pvc: &PersistentVolumeClaim) -> Option<Reasoned> {
    let requested = requested_storage(pvc)?;
    let status = pvc.status.as_ref()?;
    let capacity = status.capacity.as_ref()?.get("storage")?;
    if quantity_greater(requested, capacity) != Some(true) {
        return None;
    }
    let waiting_for_fs = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "FileSystemResizePending" && c.status == "True");
    let step = if waiting_for_fs {
        "the volume is resized; the kubelet grows the file system when the pod (re)starts"
    } else {
        "waiting for the storage driver to resize the volume"
    };
    Some(Reasoned::new(
        reasons::VOLUME_EXPANDING,
        format!(
            "PVC {} is expanding from {} to {}: {step}",
            pvc.name_any(),
            capacity.0,
            requested.0
        ),
    ))
}

/// Capacity of the bound volume, as the PVC reports it.
pub fn pvc_capacity(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    pvc.status
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .cloned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimCondition, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pvc(requested: &str, capacity: &str, fs_pending: bool) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data-s-0".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(requested.into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                capacity: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(capacity.into()),
                )])),
                conditions: fs_pending.then(|| {
                    vec![PersistentVolumeClaimCondition {
                        type_: "FileSystemResizePending".into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn progress_while_capacity_is_below_request() {
        assert_eq!(pvc_progress(&pvc("1Gi", "1024Mi", false)), None);
        assert_eq!(pvc_progress(&pvc("2Gi", "3Gi", false)), None);
        let progress = pvc_progress(&pvc("2Gi", "1Gi", false)).expect("expanding");
        assert_eq!(progress.reason, reasons::VOLUME_EXPANDING);
        assert!(
            progress.message.contains("from 1Gi to 2Gi"),
            "{}",
            progress.message
        );
        let fs = pvc_progress(&pvc("2Gi", "1Gi", true)).expect("expanding");
        assert!(fs.message.contains("file system"), "{}", fs.message);
    }

    #[test]
    fn pvc_names_follow_the_statefulset_convention() {
        let sts = StatefulSet {
            metadata: ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            },
            spec: k8s_openapi::api::apps::v1::StatefulSetSpec {
                replicas: Some(2),
                ..Default::default()
            },
            status: None,
        };
        assert_eq!(pvc_names(&sts), ["data-s-0", "data-s-1"]);
    }
}
