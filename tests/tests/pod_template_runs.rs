//! "The pod template runs": the StatefulSet the operator builds for a sample
//! CR starts a working server. The `store-server` container's args are run
//! against the real `drasi-store-server` binary, with the pod's volumes
//! materialized in a temp dir (Secret volumes filled from the Secrets the
//! builders produce, or from a fake TLS Secret), the readiness probe polled as
//! the kubelet would, and a `RemoteStateStoreProvider` configured only from
//! the connection Secret's data.
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
    BuildContext, DesiredObjects, ResolvedInputs, desired_objects, generate_token,
};
use drasi_store_operator::crd::{DrasiStateStore, TlsSpec};
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
    fn new(pod: &PodSpec, container: &Container, secrets: &BTreeMap<String, Secret>) -> Self {
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
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let dir = match dirs.get(&mount.name) {
                Some(dir) => dir.clone(),
                // volumeClaimTemplates are not pod volumes.
                None => {
                    let dir = root.path().join(&mount.name);
                    std::fs::create_dir_all(&dir).unwrap();
                    dir
                }
            };
            mounts.push((mount.mount_path.clone(), dir));
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

/// Starts the pod's container locally and round-trips through a client built
/// only from the connection Secret.
async fn run_pod(store: &DrasiStateStore, objects: &DesiredObjects, extra: Vec<Secret>) {
    let mut secrets: BTreeMap<String, Secret> = extra
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
    let pod = MaterializedPod::new(&pod_spec, &container, &secrets);
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
    run_pod(&store, &objects, Vec::new()).await;
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
    run_pod(&store, &objects, vec![tls_secret]).await;
}
