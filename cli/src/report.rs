//! `report`: a support archive about one store. It holds the store, its
//! backups, the events about them, the server pods' logs, the
//! StatefulSet/Service/PVC/Pod objects and the server's metrics. Secrets are
//! never read into it (only the store's own Secrets are read, to know which
//! values to redact), and every file passes through [`Redactor`].

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use drasi_store_operator::builders::{TOKEN_KEY, headless_service_name, token_secret_name};
use drasi_store_operator::crd::DrasiStateStoreBackup;
use drasi_store_operator::labels::selector_string;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{ApiResource, DynamicObject, ListParams, LogParams};
use kube::{Api, ResourceExt as _};
use serde::Serialize;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::redact::Redactor;
use crate::server;

/// One file of the archive, already redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Report {
    pub path: PathBuf,
    pub files: Vec<String>,
    /// Parts that could not be collected (also in `errors.txt`).
    pub errors: Vec<String>,
}

/// Collects the report of `store` and writes it to `output` (a gzipped
/// tar; must not exist). Only a missing store fails the whole report;
/// other parts that cannot be read are listed in `errors.txt`.
pub async fn write(
    cluster: &Cluster,
    store: &str,
    tail_lines: i64,
    output: &Path,
) -> anyhow::Result<Report> {
    if tokio::fs::try_exists(output).await.unwrap_or(true) {
        bail!(
            "{} already exists (or cannot be checked); refusing to overwrite it",
            output.display()
        );
    }
    let (files, errors) = collect(cluster, store, tail_lines).await?;
    let names = files.iter().map(|f| f.path.clone()).collect();
    let root = format!("{store}-report");
    let path = output.to_path_buf();
    tokio::task::spawn_blocking(move || write_archive(&path, &root, &files))
        .await
        .context("the archive task failed")??;
    Ok(Report {
        path: output.to_path_buf(),
        files: names,
        errors,
    })
}

/// Reads everything the report holds, redacted, as (path, content) pairs.
pub async fn collect(
    cluster: &Cluster,
    store: &str,
    tail_lines: i64,
) -> anyhow::Result<(Vec<ReportFile>, Vec<String>)> {
    let typed = cluster.store(store).await?;
    let mut out = Collector::default();

    // The values to redact: the token handed to clients and every token
    // the server accepts. Their absence is noted; generic patterns remain.
    let mut secrets = Vec::new();
    match server::connection(cluster, &typed).await {
        Ok(c) => secrets.push(c.token),
        Err(err) => out.error(format!("connection Secret (for redaction): {err:#}")),
    }
    let token_secret = token_secret_name(&typed);
    match cluster.api::<Secret>().get_opt(&token_secret).await {
        Ok(Some(secret)) => {
            if let Some(v) = secret.data.unwrap_or_default().get(TOKEN_KEY) {
                // The server's token file: one token a line, `#` comments.
                secrets.extend(
                    String::from_utf8_lossy(&v.0)
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_string),
                );
            }
        }
        Ok(None) => {}
        Err(err) => out.error(format!("Secret {token_secret} (for redaction): {err}")),
    }
    let redactor = Redactor::new(secrets);

    let ns = &cluster.namespace;
    let stores = cluster.dynamic_stores();
    if let Some(object) = out.ok("store", stores.get(store).await) {
        out.yaml("store.yaml", &clean(object));
    }

    let backups: Api<DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        ns,
        &ApiResource::erase::<DrasiStateStoreBackup>(&()),
    );
    let mut names: BTreeSet<String> = BTreeSet::from([store.to_string()]);
    if let Some(list) = out.ok("backups", backups.list(&ListParams::default()).await) {
        let mine: Vec<Value> = list
            .items
            .into_iter()
            .filter(|b| b.data["spec"]["store"].as_str() == Some(store))
            .inspect(|b| {
                names.insert(b.name_any());
                if let Some(job) = b.data["status"]["jobName"].as_str() {
                    names.insert(job.to_string());
                }
            })
            .map(clean)
            .collect();
        out.yaml("backups.yaml", &mine);
    }

    let selector = ListParams::default().labels(&selector_string(store));
    if let Some(sts) = out.ok(
        "statefulset",
        cluster.api::<StatefulSet>().get_opt(store).await,
    ) {
        names.extend(sts.iter().map(|s| s.name_any()));
        out.yaml("statefulset.yaml", &sts.map(clean));
    }
    let services = cluster.api::<Service>();
    let mut found = Vec::new();
    for name in [store.to_string(), headless_service_name(store)] {
        if let Some(Some(service)) =
            out.ok(&format!("service {name}"), services.get_opt(&name).await)
        {
            names.insert(name);
            found.push(clean(service));
        }
    }
    out.yaml("services.yaml", &found);
    if let Some(list) = out.ok(
        "volume claims",
        cluster.api::<PersistentVolumeClaim>().list(&selector).await,
    ) {
        names.extend(list.items.iter().map(|c| c.name_any()));
        let claims: Vec<Value> = list.items.into_iter().map(clean).collect();
        out.yaml("pvcs.yaml", &claims);
    }
    let pods = out
        .ok("pods", cluster.pods().list(&selector).await)
        .map(|l| l.items)
        .unwrap_or_default();
    names.extend(pods.iter().map(|p| p.name_any()));
    let pod_values: Vec<Value> = pods.iter().cloned().map(clean).collect();
    out.yaml("pods.yaml", &pod_values);
    for pod in &pods {
        logs(&mut out, cluster, pod, tail_lines).await;
    }

    if let Some(list) = out.ok(
        "events",
        cluster.api::<Event>().list(&ListParams::default()).await,
    ) {
        let mut events: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object
                    .name
                    .as_ref()
                    .is_some_and(|n| names.contains(n))
            })
            .collect();
        events.sort_by_key(|e| {
            e.last_timestamp
                .clone()
                .or_else(|| e.first_timestamp.clone())
                .map(|t| t.0)
        });
        let events: Vec<Value> = events.into_iter().map(clean).collect();
        out.yaml("events.yaml", &events);
    }

    match server::access(cluster, &typed).await {
        Ok(access) => match access.metrics_text().await {
            Ok(text) => out.file("metrics.txt", text.into_bytes()),
            Err(err) => out.error(format!("metrics: {err:#}")),
        },
        Err(err) => out.error(format!("metrics: {err:#}")),
    }

    let errors: Vec<String> = out.errors.iter().map(|e| redactor.redact(e)).collect();
    if !errors.is_empty() {
        let text = errors.join("\n") + "\n";
        out.file("errors.txt", text.into_bytes());
    }
    let files = out
        .files
        .into_iter()
        .map(|f| ReportFile {
            content: redactor
                .redact(&String::from_utf8_lossy(&f.content))
                .into_bytes(),
            path: f.path,
        })
        .collect();
    Ok((files, errors))
}

/// The current (and, after a restart, the previous) log of each container.
async fn logs(out: &mut Collector, cluster: &Cluster, pod: &Pod, tail_lines: i64) {
    let name = pod.name_any();
    let spec = pod.spec.clone().unwrap_or_default();
    let restarted: BTreeSet<String> = pod
        .status
        .as_ref()
        .map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .filter(|c| c.restart_count > 0)
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| c.name.clone());
    for container in containers {
        for previous in [false, true] {
            if previous && !restarted.contains(&container) {
                continue;
            }
            let params = LogParams {
                container: Some(container.clone()),
                tail_lines: Some(tail_lines),
                previous,
                ..LogParams::default()
            };
            let suffix = if previous { ".previous" } else { "" };
            let what = format!("log of {name}/{container}{suffix}");
            if let Some(text) = out.ok(&what, cluster.pods().logs(&name, &params).await) {
                out.file(
                    &format!("logs/{name}/{container}{suffix}.log"),
                    text.into_bytes(),
                );
            }
        }
    }
}

/// An object as YAML-ready JSON, without the server-side bookkeeping noise.
fn clean<T: Serialize>(object: T) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    value
}

#[derive(Default)]
struct Collector {
    files: Vec<ReportFile>,
    errors: Vec<String>,
}

impl Collector {
    fn ok<T>(&mut self, what: &str, result: Result<T, kube::Error>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(err) => {
                self.error(format!("{what}: {err}"));
                None
            }
        }
    }

    fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    fn file(&mut self, path: &str, content: Vec<u8>) {
        self.files.push(ReportFile {
            path: path.to_string(),
            content,
        });
    }

    fn yaml<T: Serialize>(&mut self, path: &str, value: &T) {
        match serde_yaml::to_string(value) {
            Ok(text) => self.file(path, text.into_bytes()),
            Err(err) => self.error(format!("{path}: {err}")),
        }
    }
}

/// Writes `files` under `root/` into a gzipped tar at `path`, via
/// `path.partial` so a failed write leaves nothing under `path`.
pub fn write_archive(path: &Path, root: &str, files: &[ReportFile]) -> anyhow::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".partial");
    let temp = PathBuf::from(temp);
    let result = (|| -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for f in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(f.content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            tar.append_data(
                &mut header,
                format!("{root}/{}", f.path),
                f.content.as_slice(),
            )
            .with_context(|| format!("adding {} to the archive", f.path))?;
        }
        let mut file = tar.into_inner()?.finish()?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
            .with_context(|| format!("renaming {} to {}", temp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
