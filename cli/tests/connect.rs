//! kubectl's rules for the kubeconfig, context and namespace flags. Building
//! a client does not contact the cluster, so no server is needed.

use drasi_store_cli::args::KubeArgs;
use drasi_store_cli::cluster::{Cluster, Reach};

const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: { server: 'https://127.0.0.1:6443' }
users:
- name: u
  user: { token: not-a-real-token }
contexts:
- name: dev
  context: { cluster: c, user: u, namespace: apps }
- name: bare
  context: { cluster: c, user: u }
current-context: dev
";

fn args(dir: &tempfile::TempDir) -> KubeArgs {
    let path = dir.path().join("config");
    std::fs::write(&path, KUBECONFIG).unwrap();
    KubeArgs {
        kubeconfig: Some(path),
        ..KubeArgs::default()
    }
}

#[tokio::test]
async fn the_namespace_comes_from_the_flag_then_the_context_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::connect(&args(&dir)).await.unwrap();
    assert_eq!(cluster.namespace, "apps");
    assert_eq!(cluster.reach, Reach::PortForward);

    let bare = KubeArgs {
        context: Some("bare".into()),
        ..args(&dir)
    };
    assert_eq!(Cluster::connect(&bare).await.unwrap().namespace, "default");

    let flagged = KubeArgs {
        namespace: Some("other".into()),
        server_url: Some("http://orders.other.svc:7070".into()),
        ..args(&dir)
    };
    let cluster = Cluster::connect(&flagged).await.unwrap();
    assert_eq!(cluster.namespace, "other");
    assert_eq!(
        cluster.reach,
        Reach::Url("http://orders.other.svc:7070".into())
    );
}

#[tokio::test]
async fn an_unknown_context_or_a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = KubeArgs {
        context: Some("prod".into()),
        ..args(&dir)
    };
    let err = format!("{:#}", Cluster::connect(&unknown).await.err().unwrap());
    assert!(
        err.starts_with("loading kubeconfig ") && err.contains("prod"),
        "{err}"
    );

    let missing = KubeArgs {
        kubeconfig: Some(dir.path().join("nope")),
        ..KubeArgs::default()
    };
    let err = format!("{:#}", Cluster::connect(&missing).await.err().unwrap());
    assert!(err.starts_with("reading kubeconfig "), "{err}");
}
