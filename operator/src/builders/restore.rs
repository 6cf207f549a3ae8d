//! The restore init container (`spec.restore`): `drasi-store-server restore
//! --if-empty` into the data volume before the server starts.
//!
//! It stays in the pod template for the store's whole life: removing it
//! would change the template and restart the server. `--if-empty` makes
//! every run after the first one a no-op that reads nothing, so a restarted
//! pod neither fails nor overwrites the live database. For the same
//! reason the credentials are optional references: once the volume holds
//! a database, deleting the credentials Secret must not keep the pod from
//! starting.

use k8s_openapi::api::core::v1::{Container, Volume, VolumeMount};

use super::names::{DATA_DIR, DATA_VOLUME, TMP_DIR};
use super::statefulset::{container_security_context, default_resources};
use crate::backup::job::claim_volume;
use crate::backup::object_store_env;
use crate::crd::{RestoreLocation, RestoredFrom};
use crate::validated::ValidatedStore;

/// Name of the init container.
pub const RESTORE_CONTAINER: &str = "restore";

/// Volume and mount point of a `pvc://` source claim, read-only.
pub const RESTORE_SOURCE_VOLUME: &str = "restore-source";
pub const RESTORE_SOURCE_DIR: &str = "/var/run/drasi-store/restore-source";

/// Shown instead of a location `render` cannot know: the status of a
/// `DrasiStateStoreBackup` in the cluster.
pub fn backup_location_placeholder(backup: &str) -> String {
    format!("<location of DrasiStateStoreBackup {backup}>")
}

/// The `--input` of the restore: the object, or the file in the mounted
/// claim. A location that does not parse (only `render`'s placeholder) is
/// passed on as it is.
pub fn restore_input(from: &RestoredFrom) -> String {
    match RestoreLocation::parse(&from.location) {
        Ok(RestoreLocation::Volume { path, .. }) => format!("{RESTORE_SOURCE_DIR}/{path}"),
        Ok(RestoreLocation::S3 { .. }) | Err(_) => from.location.clone(),
    }
}

/// The server's command line in the init container.
pub fn restore_args(from: &RestoredFrom) -> Vec<String> {
    vec![
        "restore".into(),
        "--input".into(),
        restore_input(from),
        "--data-dir".into(),
        DATA_DIR.into(),
        "--if-empty".into(),
    ]
}

/// The claim of a `pvc://` location, mounted into the init container only.
pub fn restore_volume(from: &RestoredFrom) -> Option<Volume> {
    match RestoreLocation::parse(&from.location) {
        Ok(RestoreLocation::Volume { claim, .. }) => {
            Some(claim_volume(RESTORE_SOURCE_VOLUME, &claim, true))
        }
        _ => None,
    }
}

pub fn restore_container(store: &ValidatedStore<'_>, from: &RestoredFrom) -> Container {
    let spec = store.spec();
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: TMP_DIR.to_owned(),
            ..VolumeMount::default()
        },
    ];
    if restore_volume(from).is_some() {
        mounts.push(VolumeMount {
            name: RESTORE_SOURCE_VOLUME.to_owned(),
            mount_path: RESTORE_SOURCE_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let env = match (&from.object_store, RestoreLocation::parse(&from.location)) {
        (Some(os), Ok(RestoreLocation::S3 { .. })) => {
            let mut env = object_store_env(os);
            for var in &mut env {
                if let Some(key) = var
                    .value_from
                    .as_mut()
                    .and_then(|v| v.secret_key_ref.as_mut())
                {
                    key.optional = Some(true);
                }
            }
            env
        }
        _ => Vec::new(),
    };
    Container {
        name: RESTORE_CONTAINER.to_owned(),
        image: Some(store.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.to_string()),
        args: Some(restore_args(from)),
        env: (!env.is_empty()).then_some(env),
        // Building the database needs what serving it needs; an init
        // container's resources do not add to the pod's.
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security_context()),
        // A failed restore's error becomes the container's termination
        // message, shown by `kubectl describe pod`.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}
