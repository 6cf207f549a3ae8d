//! Volume expansion when `spec.storage.size` grows: the pure decisions.
//!
//! A StatefulSet's `volumeClaimTemplates` are immutable, so growing the
//! volume takes three steps: patch every existing PVC to the new size (the
//! CSI driver and kubelet resize the volume and file system), delete the
//! StatefulSet with `propagationPolicy: Orphan` (its pods and PVCs stay and
//! keep serving), and re-create it from the new template; it adopts the
//! running pods again through its selector. `apply` runs those steps;
//! `dereference` reads the PVCs and StorageClasses decided on here.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::status::{DegradedReason, Problem, Progress, ProgressingReason};
use crate::builders::{DATA_VOLUME, data_pvc_name, pvc_name};
use crate::crd::{DrasiStateStore, quantity_greater};

/// What to do about the data volumes before applying the StatefulSet.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpansionPlan {
    /// The template size did not grow: apply as usual.
    NotNeeded,
    /// The volume must grow but cannot; leave the StatefulSet alone.
    Blocked(Problem),
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

/// The requested size of the data volume template of a StatefulSet.
pub fn template_size(sts: &StatefulSet) -> Option<Quantity> {
    let template = sts
        .spec
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME))?;
    requested_storage(template).cloned()
}

/// PVC names the StatefulSet controller creates for `sts`.
pub fn pvc_names(sts: &StatefulSet) -> Vec<String> {
    let replicas = sts.spec.replicas.unwrap_or(1).max(0);
    (0..replicas)
        .map(|ordinal| pvc_name(&sts.name_any(), ordinal))
        .collect()
}

/// `(from, to)` when the existing StatefulSet's volumes must grow to
/// `desired_size`. Shrinking is rejected by the CRD; an unparsable size is
/// left for the API server to reject when the StatefulSet is applied.
pub fn growth(existing: &StatefulSet, desired_size: &Quantity) -> Option<(Quantity, Quantity)> {
    let from = template_size(existing)?;
    (quantity_greater(desired_size, &from) == Some(true)).then(|| (from, desired_size.clone()))
}

/// The StorageClass a PVC names, if any (none: a pre-provisioned volume).
pub fn storage_class_name(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.spec
        .as_ref()?
        .storage_class_name
        .as_deref()
        .filter(|c| !c.is_empty())
}

/// Decides whether the existing StatefulSet's volumes must grow to match
/// `desired`, from its existing PVCs and the StorageClasses they name
/// (`None`: the class does not exist).
pub fn plan(
    existing: &StatefulSet,
    desired: &StatefulSet,
    pvcs: &[PersistentVolumeClaim],
    classes: &BTreeMap<String, Option<StorageClass>>,
) -> ExpansionPlan {
    let Some((from, to)) = template_size(desired).and_then(|size| growth(existing, &size)) else {
        return ExpansionPlan::NotNeeded;
    };
    // A PVC never created (pod not scheduled yet) is not in `pvcs`: the new
    // template covers it.
    let mut names = Vec::new();
    for pvc in pvcs {
        let name = pvc.name_any();
        let Some(class) = storage_class_name(pvc) else {
            return ExpansionPlan::Blocked(Problem::new(
                DegradedReason::VolumeExpansionNotSupported,
                format!(
                    "storage.size grew from {} to {} but PVC {name} has no StorageClass (a \
                     pre-provisioned volume), so the operator cannot expand it; nothing was \
                     changed and the server keeps running on the current volume. storage.size \
                     cannot be lowered again (the CRD forbids shrinking)",
                    from.0, to.0
                ),
            ));
        };
        let expandable = classes
            .get(class)
            .and_then(Option::as_ref)
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
        if !expandable {
            return ExpansionPlan::Blocked(Problem::new(
                DegradedReason::VolumeExpansionNotSupported,
                format!(
                    "storage.size grew from {} to {} but StorageClass {class} of PVC {name} does \
                     not set allowVolumeExpansion: true; nothing was changed and the server keeps \
                     running on the current volume. Set allowVolumeExpansion: true on the \
                     StorageClass (if its driver supports expansion) and the operator expands \
                     the volume within a minute; storage.size cannot be lowered again (the CRD \
                     forbids shrinking)",
                    from.0, to.0
                ),
            ));
        }
        names.push(name);
    }
    ExpansionPlan::Expand {
        from,
        to,
        pvcs: names,
    }
}

/// `VolumeExpanding` progress while a PVC's capacity is below its request.
pub fn pvc_progress(pvc: &PersistentVolumeClaim) -> Option<Progress> {
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
    Some(Progress::new(
        ProgressingReason::VolumeExpanding,
        format!(
            "PVC {} is expanding from {} to {}: {step}",
            pvc.name_any(),
            capacity.0,
            requested.0
        ),
    ))
}

/// The data PVC of the store's server pod among `pvcs`.
pub fn data_pvc<'a>(
    store: &DrasiStateStore,
    pvcs: &'a [PersistentVolumeClaim],
) -> Option<&'a PersistentVolumeClaim> {
    let name = data_pvc_name(&store.name_any());
    pvcs.iter().find(|p| p.name_any() == name)
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
        assert_eq!(progress.reason, ProgressingReason::VolumeExpanding);
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

    fn sts_with_size(size: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            },
            spec: k8s_openapi::api::apps::v1::StatefulSetSpec {
                replicas: Some(1),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(DATA_VOLUME.into()),
                        ..Default::default()
                    },
                    ..pvc(size, size, false)
                }]),
                ..Default::default()
            },
            status: None,
        }
    }

    fn with_class(mut pvc: PersistentVolumeClaim, class: Option<&str>) -> PersistentVolumeClaim {
        pvc.spec.as_mut().unwrap().storage_class_name = class.map(Into::into);
        pvc
    }

    fn class(allow: Option<bool>) -> Option<StorageClass> {
        Some(StorageClass {
            allow_volume_expansion: allow,
            ..Default::default()
        })
    }

    #[test]
    fn plan_expands_only_growing_volumes_on_expandable_classes() {
        let (old, new) = (sts_with_size("1Gi"), sts_with_size("2Gi"));
        let pvcs = [with_class(pvc("1Gi", "1Gi", false), Some("fast"))];
        let expandable = BTreeMap::from([("fast".to_string(), class(Some(true)))]);
        assert_eq!(
            plan(&old, &new, &pvcs, &expandable),
            ExpansionPlan::Expand {
                from: Quantity("1Gi".into()),
                to: Quantity("2Gi".into()),
                pvcs: vec!["data-s-0".into()],
            }
        );
        // Same size, or a smaller one (the CRD forbids it): nothing to do.
        assert_eq!(
            plan(&old, &old, &pvcs, &expandable),
            ExpansionPlan::NotNeeded
        );
        assert_eq!(
            plan(&new, &old, &pvcs, &expandable),
            ExpansionPlan::NotNeeded
        );
        // No PVC yet: the new template covers it.
        assert_eq!(
            plan(&old, &new, &[], &BTreeMap::new()),
            ExpansionPlan::Expand {
                from: Quantity("1Gi".into()),
                to: Quantity("2Gi".into()),
                pvcs: vec![],
            }
        );
    }

    #[test]
    fn plan_is_blocked_without_an_expandable_class() {
        let (old, new) = (sts_with_size("1Gi"), sts_with_size("2Gi"));
        let blocked = |pvcs: &[PersistentVolumeClaim],
                       classes: &BTreeMap<String, Option<StorageClass>>| {
            match plan(&old, &new, pvcs, classes) {
                ExpansionPlan::Blocked(problem) => {
                    assert_eq!(problem.reason, DegradedReason::VolumeExpansionNotSupported);
                    problem.message
                }
                other => panic!("not blocked: {other:?}"),
            }
        };
        let no_class = [with_class(pvc("1Gi", "1Gi", false), None)];
        assert!(blocked(&no_class, &BTreeMap::new()).contains("has no StorageClass"));
        let standard = [with_class(pvc("1Gi", "1Gi", false), Some("standard"))];
        for classes in [
            BTreeMap::from([("standard".to_string(), class(None))]),
            BTreeMap::from([("standard".to_string(), class(Some(false)))]),
            BTreeMap::from([("standard".to_string(), None)]),
        ] {
            assert!(blocked(&standard, &classes).contains("allowVolumeExpansion"));
        }
    }
}
