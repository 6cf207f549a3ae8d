//! `restore`: a new store filled from a completed backup.
//!
//! The new store is built as JSON, not as the operator's Rust type: the
//! source store's spec is copied field by field (fields a newer operator
//! added survive even if this build does not know them), and
//! `spec.restore.fromBackup` is set on the copy.

use anyhow::{Context as _, bail};
use drasi_store_operator::crd::{BackupPhase, MAX_NAME_LENGTH};
use kube::api::{DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::cluster::Cluster;

/// What `restore` created.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub store: String,
    pub backup: String,
    /// The store whose spec was copied; `None` when it no longer exists
    /// and a minimal spec was used.
    pub spec_from: Option<String>,
}

/// The new store's spec: `source` (the backed-up store's spec) without
/// `paused` (a restored store should come up) and with
/// `restore: {fromBackup: backup}` replacing any earlier restore settings;
/// without a source, only the restore settings (the operator's defaults
/// apply to everything else).
pub fn restored_spec(source: Option<&Value>, backup: &str) -> Value {
    let mut spec = match source {
        Some(Value::Object(map)) => Value::Object(map.clone()),
        _ => json!({}),
    };
    let map = spec.as_object_mut().expect("spec is an object");
    map.remove("paused");
    map.insert("restore".into(), json!({ "fromBackup": backup }));
    spec
}

/// A DNS-1035 label of at most [`MAX_NAME_LENGTH`] characters, as the CRD
/// requires of a store's name.
pub fn check_store_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= MAX_NAME_LENGTH
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "{name:?} is not a valid store name: lowercase letters, digits and '-', starting with a letter, not ending with '-', at most {MAX_NAME_LENGTH} characters"
        );
    }
    Ok(())
}

/// Creates DrasiStateStore `new_store` restoring `backup`. Refuses, creating
/// nothing, when the name is invalid or taken, or the backup is missing or
/// not Completed.
pub async fn restore(cluster: &Cluster, backup: &str, new_store: &str) -> anyhow::Result<Restored> {
    check_store_name(new_store)?;
    let ns = &cluster.namespace;
    let source = cluster
        .backups()
        .get_opt(backup)
        .await
        .with_context(|| format!("reading DrasiStateStoreBackup {ns}/{backup}"))?
        .with_context(|| format!("DrasiStateStoreBackup {backup} not found in namespace {ns}"))?;
    let status = source.status.clone().unwrap_or_default();
    if status.phase != Some(BackupPhase::Completed) {
        bail!(
            "backup {backup} is {}, not Completed: only a completed backup can be restored",
            status
                .phase
                .map_or("without a phase yet".to_string(), |p| p.to_string())
        );
    }
    let stores = cluster.dynamic_stores();
    if stores
        .get_opt(new_store)
        .await
        .with_context(|| format!("checking whether DrasiStateStore {new_store} exists"))?
        .is_some()
    {
        bail!(
            "DrasiStateStore {new_store} already exists in namespace {ns}; a restore creates a new store, choose another name"
        );
    }
    let original = stores
        .get_opt(&source.spec.store)
        .await
        .with_context(|| format!("reading DrasiStateStore {}", source.spec.store))?;
    let spec = restored_spec(original.as_ref().and_then(|o| o.data.get("spec")), backup);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "drasi.io/v1alpha1",
        "kind": "DrasiStateStore",
        "metadata": { "name": new_store, "namespace": ns },
        "spec": spec,
    }))
    .context("building the new DrasiStateStore")?;
    // A dry run first: the API server prunes fields its CRD does not
    // declare, and a store created without `spec.restore` would start
    // empty instead of restoring. Nothing is stored by a dry run.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let checked = stores
        .create(&dry_run, &object)
        .await
        .map_err(|err| conflict_or(err, new_store, ns))
        .with_context(|| format!("checking DrasiStateStore {new_store} with a dry run"))?;
    if checked.data["spec"]["restore"]["fromBackup"].as_str() != Some(backup) {
        bail!(
            "the DrasiStateStore CRD installed in this cluster has no spec.restore (the API server drops the field), so {new_store} would start empty; upgrade the operator and its CRDs to a version with declarative restore. Nothing was created"
        );
    }
    stores
        .create(&PostParams::default(), &object)
        .await
        .map_err(|err| conflict_or(err, new_store, ns))
        .with_context(|| format!("creating DrasiStateStore {new_store} from backup {backup}"))?;
    Ok(Restored {
        store: new_store.to_string(),
        backup: backup.to_string(),
        spec_from: original.map(|_| source.spec.store.clone()),
    })
}

/// A 409 means the name was taken between the check and the create.
fn conflict_or(err: kube::Error, store: &str, ns: &str) -> anyhow::Error {
    match &err {
        kube::Error::Api(status) if status.code == 409 => anyhow::anyhow!(
            "DrasiStateStore {store} already exists in namespace {ns} (created meanwhile)"
        ),
        _ => anyhow::Error::new(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_spec_unpauses_and_replaces_restore_settings() {
        let source = json!({
            "storage": { "size": "5Gi" },
            "paused": true,
            "replicas": 3,
            "restore": { "source": "s3://old/x.snap" },
        });
        assert_eq!(
            restored_spec(Some(&source), "b1"),
            json!({
                "storage": { "size": "5Gi" },
                "replicas": 3,
                "restore": { "fromBackup": "b1" },
            })
        );
    }

    #[test]
    fn without_a_source_only_the_restore_is_set() {
        assert_eq!(
            restored_spec(None, "b1"),
            json!({ "restore": { "fromBackup": "b1" } })
        );
    }

    #[test]
    fn store_names_follow_the_crd() {
        assert!(check_store_name("orders-2").is_ok());
        assert!(check_store_name(&"a".repeat(MAX_NAME_LENGTH)).is_ok());
        for bad in [
            "",
            "2orders",
            "Orders",
            "orders-",
            "or_ders",
            &"a".repeat(MAX_NAME_LENGTH + 1),
        ] {
            assert!(check_store_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
