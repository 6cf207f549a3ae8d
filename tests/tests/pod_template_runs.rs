//! "The pod template runs": the StatefulSet the operator builds for a sample
//! CR starts a working server. The `store-server` container's args are run
//! against the real `drasi-store-server` binary, with the pod's volumes
//! materialized in a temp dir (Secret volumes filled from the Secrets the
//! builders produce, or from a fake TLS Secret), the readiness probe polled as
//! the kubelet would, and a `RemoteStateStoreProvider` configured only from
//! the connection Secret's data.
//!
//! Init containers (the restore of `spec.restore`) run first, as the kubelet
//! runs them, on the same volumes, and twice: a restarted pod runs them
//! again, so a second run must succeed without changing anything.
//!
//! The only edits to the args are the ones a laptop needs: mount paths are
//! remapped to temp dirs, `--listen 0.0.0.0:7070` becomes `127.0.0.1:0`, and
//! `--log-format json` becomes `text` so the helper can read the bound port
//! from the startup line. The URL's host is rewritten to that loopback port.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_operator::builders::{
    BuildContext, DesiredObjects, RESTORE_CONTAINER, RESTORE_SOURCE_VOLUME, ResolvedInputs, build,
    desired_objects, generate_token,
};
use drasi_store_operator::controller::restore;
use drasi_store_operator::crd::{DrasiStateStore, RestoreSpec, TlsSpec};
use drasi_store_operator::validated::validate;
use drasi_store_protocol::env;
use drasi_store_tests::ServerProcess;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tempfile::TempDir;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn ctx() -> BuildContext {
    BuildContext::new("ghcr.io/drasi-project/drasi-store-server:test")
}

fn sample(name: &str) -> DrasiStateStore {
    let yaml = format!(
        "apiVersion: drasi.io/v1alpha1\nkind: DrasiStateStore\nmetadata:\n  name: {name}\n  namespace: apps\n  uid: 00000000-0000-4000-8000-000000000042\nspec:\n  durability: Immediate\n  limits:\n    maxKeyBytes: 1024\n    maxValueBytes: 65536\n"
    );
    serde_yaml::from_str(&yaml).unwrap()
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// The pod's volumes as directories, and the mount path -> directory map.
struct MaterializedPod {
    _root: TempDir,
    mounts: Vec<(String, PathBuf)>,
}

impl MaterializedPod {
    /// Lays out every volume of `pod` the way the kubelet would: Secret
    /// volumes with their `items` (looked up in `secrets` by name), emptyDirs
    /// and the `data` claim as empty directories.
    fn new(pod: &PodSpec, containers: &[&Container], secrets: &BTreeMap<String, Secret>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut dirs = BTreeMap::new();
        for volume in pod.volumes.iter().flatten() {
            let dir = root.path().join(&volume.name);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(source) = &volume.secret {
                let name = source.secret_name.as_deref().unwrap();
                let secret = secrets
                    .get(name)
                    .unwrap_or_else(|| panic!("pod mounts Secret {name}, which does not exist"));
                let data = secret_data(secret);
                for item in source.items.iter().flatten() {
                    let value = data
                        .get(&item.key)
                        .unwrap_or_else(|| panic!("Secret {name} has no key {}", item.key));
                    std::fs::write(dir.join(&item.path), value).unwrap();
                }
            }
            dirs.insert(volume.name.clone(), dir);
        }
        // Every container of the pod sees the same directory for a volume.
        let mut mounts = Vec::new();
        let all_mounts = containers
            .iter()
            .flat_map(|c| c.volume_mounts.iter().flatten());
        for mount in all_mounts {
            let dir = match dirs.get(&mount.name) {
                Some(dir) => dir.clone(),
                // volumeClaimTemplates are not pod volumes.
                None => {
                    let dir = root.path().join(&mount.name);
                    std::fs::create_dir_all(&dir).unwrap();
                    dirs.insert(mount.name.clone(), dir.clone());
                    dir
                }
            };
            if !mounts.iter().any(|(path, _)| path == &mount.mount_path) {
                mounts.push((mount.mount_path.clone(), dir));
            }
        }
        Self {
            _root: root,
            mounts,
        }
    }

    fn remap(&self, arg: &str) -> String {
        for (mount_path, dir) in &self.mounts {
            if let Some(rest) = arg.strip_prefix(mount_path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", dir.display());
            }
        }
        arg.to_owned()
    }

    fn dir(&self, mount_path: &str) -> &Path {
        &self.mounts.iter().find(|(m, _)| m == mount_path).unwrap().1
    }

    /// The directory of the pod volume `volume`.
    fn volume_dir(&self, volume: &str) -> PathBuf {
        self._root.path().join(volume)
    }
}

fn container_args(container: &Container, pod: &MaterializedPod) -> Vec<String> {
    let args = container.args.clone().unwrap();
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--listen" => {
                assert_eq!(iter.next().map(String::as_str), Some("0.0.0.0:7070"));
                out.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
            }
            "--log-format" => {
                assert_eq!(iter.next().map(String::as_str), Some("json"));
                out.extend(["--log-format".to_owned(), "text".to_owned()]);
            }
            other => out.push(pod.remap(other)),
        }
    }
    out
}

/// GETs the readiness probe's path with the probe's scheme until it answers
/// 200. Like the kubelet, it does not verify the server certificate.
async fn wait_ready(container: &Container, port: u16) {
    let probe = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("readiness probe is an httpGet");
    let scheme = probe.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
    let url = format!(
        "{scheme}://127.0.0.1:{port}{}",
        probe.path.as_deref().unwrap()
    );
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match client.get(&url).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return,
            other if Instant::now() > deadline => panic!("{url} never became ready: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What a pod needs besides the objects the operator builds.
#[derive(Default)]
struct PodRun {
    /// Secrets the pod mounts that the operator does not create.
    extra_secrets: Vec<Secret>,
    /// Files already in a pod volume when the pod starts: (volume, path in
    /// it, content), e.g. a snapshot on a backup claim.
    volume_files: Vec<(String, String, Vec<u8>)>,
    /// (store_id, key, value) the server must serve before anything is
    /// written to it.
    expected: Vec<(String, String, Vec<u8>)>,
}

/// What one run of an init container printed.
struct InitRun {
    container: String,
    stdout: String,
}

/// Runs an init container's command to completion, as the kubelet does
/// before it starts the pod's containers; it must exit 0.
fn run_init(container: &Container, pod: &MaterializedPod) -> InitRun {
    let args = container_args(container, pod);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_store-server-under-test"));
    cmd.args(&args).env_remove("RUST_LOG").stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("DRASI_STORE_") || key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            cmd.env(&var.name, value);
        }
    }
    let out = cmd.output().expect("run the init container's command");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "init container {} failed with {args:?}:\n{stdout}\n{}",
        container.name,
        String::from_utf8_lossy(&out.stderr)
    );
    InitRun {
        container: container.name.clone(),
        stdout,
    }
}

/// Starts the pod locally (init containers, twice, then the server
/// container) and round-trips through a client built only from the
/// connection Secret. Returns what the init containers printed, first runs
/// before second runs.
async fn run_pod(store: &DrasiStateStore, objects: &DesiredObjects, run: PodRun) -> Vec<InitRun> {
    let mut secrets: BTreeMap<String, Secret> = run
        .extra_secrets
        .into_iter()
        .chain(objects.auth_secret.clone())
        .map(|s| (s.metadata.name.clone().unwrap(), s))
        .collect();
    secrets.insert(
        objects.connection_secret.metadata.name.clone().unwrap(),
        objects.connection_secret.clone(),
    );
    let pod_spec = objects.statefulset.spec.template.spec.clone().unwrap();
    let container = pod_spec
        .containers
        .iter()
        .find(|c| c.name == "store-server")
        .unwrap()
        .clone();
    let init_containers = pod_spec.init_containers.clone().unwrap_or_default();
    let mut containers: Vec<&Container> = init_containers.iter().collect();
    containers.push(&container);
    let pod = MaterializedPod::new(&pod_spec, &containers, &secrets);
    for (volume, path, content) in &run.volume_files {
        let file = pod.volume_dir(volume).join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    // A pod restarted after its first start runs its init containers again
    // on the same volumes: both runs must succeed.
    let mut init_runs = Vec::new();
    for _ in 0..2 {
        for init in &init_containers {
            init_runs.push(run_init(init, &pod));
        }
    }
    let args = container_args(&container, &pod);

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_store-server-under-test"));
    cmd.args(&args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (key, _) in std::env::vars() {
        // The pod gets no DRASI_STORE_* variables; neither does this process.
        if key.starts_with("DRASI_STORE_") {
            cmd.env_remove(key);
        }
    }
    let server = ServerProcess::spawn(cmd, pod.dir("/data").to_path_buf(), None)
        .unwrap_or_else(|e| panic!("server did not start with {args:?}: {e:#}"));
    let port = server.addr().port();
    wait_ready(&container, port).await;

    let connection = secret_data(&objects.connection_secret);
    let text = |k: &str| String::from_utf8(connection[k].clone()).unwrap();
    let url = text(env::URL);
    let name = store.metadata.name.as_deref().unwrap();
    let in_cluster = format!("{name}.apps.svc:7070");
    assert!(url.ends_with(&in_cluster), "{url}");
    let local_url = url.replace(&in_cluster, &format!("127.0.0.1:{port}"));
    let mut builder = RemoteStateStoreProvider::builder(local_url).token(text(env::TOKEN));
    if let Some(ca) = connection.get(env::CA_CERT) {
        builder = builder.ca_cert_pem(ca.clone());
    }
    let provider = builder.build().unwrap();

    for (store_id, key, value) in &run.expected {
        assert_eq!(
            provider.get(store_id, key).await.unwrap().as_ref(),
            Some(value),
            "{store_id}/{key} is not served\nserver log:\n{}",
            server.log()
        );
    }
    provider
        .set("checkpoints", "source-1", b"offset=42".to_vec())
        .await
        .unwrap_or_else(|e| panic!("set failed: {e}\nserver log:\n{}", server.log()));
    assert_eq!(
        provider.get("checkpoints", "source-1").await.unwrap(),
        Some(b"offset=42".to_vec())
    );
    // The limits from the spec reached the server.
    assert!(
        provider
            .set("checkpoints", &"k".repeat(2048), b"v".to_vec())
            .await
            .is_err(),
        "a 2 KiB key must exceed spec.limits.maxKeyBytes = 1024"
    );
    provider.sync().await.unwrap();
    // And the data landed on the volume mounted at /data.
    assert!(
        std::fs::read_dir(pod.dir("/data")).unwrap().count() > 0,
        "nothing written under the data volume"
    );
    server.terminate(Duration::from_secs(30)).unwrap();
    init_runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_pod_template_runs() {
    let store = sample("plain-store");
    let inputs = ResolvedInputs {
        token: generate_token(),
        ca_cert_pem: None,
    };
    let objects = desired_objects(&store, &ctx(), &inputs).unwrap();
    assert!(objects.auth_secret.is_some());
    let init_runs = run_pod(&store, &objects, PodRun::default()).await;
    assert!(
        init_runs.is_empty(),
        "a store without spec.restore has no init container"
    );
}

/// A `kubernetes.io/tls` Secret as cert-manager would issue it: a leaf for
/// the Service's DNS names (and loopback, where this test connects) signed
/// by a CA shipped as `ca.crt`.
fn fake_tls_secret(name: &str, store: &str) -> (Secret, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "drasi test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params = CertificateParams::new(vec![
        format!("{store}.apps.svc"),
        format!("{store}.apps.svc.cluster.local"),
        "127.0.0.1".to_owned(),
    ])
    .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let secret = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("apps".to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(leaf.pem().into_bytes())),
            (
                "tls.key".to_owned(),
                ByteString(leaf_key.serialize_pem().into_bytes()),
            ),
            ("ca.crt".to_owned(), ByteString(ca.pem().into_bytes())),
        ])),
        ..Default::default()
    };
    (secret, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_pod_template_runs() {
    let mut store = sample("tls-store");
    store.spec.tls = Some(TlsSpec {
        secret_name: "tls-store-cert".to_owned(),
    });
    let (tls_secret, ca_pem) = fake_tls_secret("tls-store-cert", "tls-store");
    // What the reconciler resolves: the Secret's ca.crt.
    let inputs = ResolvedInputs {
        token: generate_token(),
        ca_cert_pem: Some(ca_pem),
    };
    let objects = desired_objects(&store, &ctx(), &inputs).unwrap();
    let url = String::from_utf8(secret_data(&objects.connection_secret)[env::URL].clone()).unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let run = PodRun {
        extra_secrets: vec![tls_secret],
        ..PodRun::default()
    };
    run_pod(&store, &objects, run).await;
}

/// A snapshot taken by the real `backup` subcommand of a running server
/// that holds `records`.
async fn real_snapshot(records: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let token = generate_token();
    let binary = env!("CARGO_BIN_EXE_store-server-under-test");
    let server = ServerProcess::builder(binary, dir.path().join("data"))
        .token(token.clone())
        .start()
        .unwrap();
    let provider = RemoteStateStoreProvider::builder(server.url())
        .token(token.clone())
        .build()
        .unwrap();
    for (store_id, key, value) in records {
        provider.set(store_id, key, value.to_vec()).await.unwrap();
    }
    provider.sync().await.unwrap();
    let token_file = dir.path().join("backup-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let snapshot = dir.path().join("b1.snap");
    let out = Command::new(binary)
        .args(["backup", "--url", &server.url(), "--token-file"])
        .arg(&token_file)
        .arg("--output")
        .arg(&snapshot)
        .env_remove("DRASI_STORE_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.terminate(Duration::from_secs(30)).unwrap();
    std::fs::read(snapshot).unwrap()
}

/// `spec.restore` with a `pvc://` source: the rendered init container,
/// run for real against a snapshot on the (materialized) backup claim,
/// restores it into the data volume, skips on the pod's second start, and
/// the server then serves the restored keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_pod_template_runs() {
    let records: [(&str, &str, &[u8]); 3] = [
        ("checkpoints", "source-0", b"offset=7"),
        ("orders", "o-1", b"{\"qty\":2}"),
        ("orders", "o-2", b"\x00\xff"),
    ];
    let snapshot = real_snapshot(&records).await;

    let mut store = sample("restored-store");
    store.spec.restore = Some(RestoreSpec {
        source: Some("pvc://drasi-backups/stores/apps/plain-store/b1.snap".to_owned()),
        ..RestoreSpec::default()
    });
    let inputs = ResolvedInputs {
        token: generate_token(),
        ca_cert_pem: None,
    };
    // What the reconciler records in status.restoredFrom and builds from.
    let mut referenced = inputs.referenced();
    referenced.restore = restore::resolve(&store, None).unwrap();
    let objects = build(&validate(&store, &ctx(), &referenced).unwrap());
    let pod_spec = objects.statefulset.spec.template.spec.as_ref().unwrap();
    let init = &pod_spec
        .init_containers
        .as_ref()
        .expect("an init container")[0];
    assert_eq!(init.name, RESTORE_CONTAINER);

    let run = PodRun {
        volume_files: vec![(
            RESTORE_SOURCE_VOLUME.to_owned(),
            "stores/apps/plain-store/b1.snap".to_owned(),
            snapshot,
        )],
        expected: records
            .iter()
            .map(|(s, k, v)| (s.to_string(), k.to_string(), v.to_vec()))
            .collect(),
        ..PodRun::default()
    };
    let init_runs = run_pod(&store, &objects, run).await;
    assert_eq!(init_runs.len(), 2);
    assert!(init_runs.iter().all(|r| r.container == RESTORE_CONTAINER));
    assert!(
        init_runs[0].stdout.contains("restored into /")
            && init_runs[0].stdout.contains("records: 3"),
        "{}",
        init_runs[0].stdout
    );
    assert!(
        init_runs[1].stdout.contains("restore skipped"),
        "{}",
        init_runs[1].stdout
    );
}
