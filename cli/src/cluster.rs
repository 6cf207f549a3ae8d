//! The Kubernetes side: a client, the namespace the command works in, and
//! how the store's server is reached.

use anyhow::Context as _;
use drasi_store_operator::crd::{DrasiStateStore, DrasiStateStoreBackup};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::args::KubeArgs;

/// How commands that talk to the server (status's metrics, export, import,
/// report) reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// A port-forward through the API server to a ready pod of the store.
    PortForward,
    /// A base URL the caller can reach directly (`--server-url`).
    Url(String),
}

/// A client, the namespace, and how to reach servers.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    pub reach: Reach,
}

impl Cluster {
    pub fn new(client: Client, namespace: impl Into<String>, reach: Reach) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            reach,
        }
    }

    /// kubectl's rules: `--kubeconfig`, else `$KUBECONFIG`, else
    /// `~/.kube/config`, else the in-cluster service account; `--context`
    /// picks a context; `-n` wins over the context's namespace.
    pub async fn connect(args: &KubeArgs) -> anyhow::Result<Self> {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .with_context(|| format!("loading kubeconfig {}", path.display()))?
            }
            None if args.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .context("loading the kubeconfig context")?,
            None => Config::infer()
                .await
                .context("loading the kubeconfig, or else the in-cluster configuration")?,
        };
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).context("creating the Kubernetes client")?;
        let reach = match &args.server_url {
            Some(url) => Reach::Url(url.clone()),
            None => Reach::PortForward,
        };
        Ok(Self::new(client, namespace, reach))
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn stores(&self) -> Api<DrasiStateStore> {
        self.api()
    }

    pub fn backups(&self) -> Api<DrasiStateStoreBackup> {
        self.api()
    }

    pub fn pods(&self) -> Api<Pod> {
        self.api()
    }

    /// The stores as untyped objects: a spec is copied field by field,
    /// including fields a newer operator added that this build does not know.
    pub fn dynamic_stores(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::erase::<DrasiStateStore>(&()),
        )
    }

    /// The store named `name`, or a clear error naming it and the namespace.
    pub async fn store(&self, name: &str) -> anyhow::Result<DrasiStateStore> {
        self.stores()
            .get_opt(name)
            .await
            .with_context(|| format!("reading DrasiStateStore {}/{name}", self.namespace))?
            .with_context(|| {
                format!(
                    "DrasiStateStore {name} not found in namespace {}",
                    self.namespace
                )
            })
    }
}
