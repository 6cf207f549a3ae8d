//! A replicated store of real `drasi-store-server` processes on loopback,
//! for the replication tests: start, `kill -9`, restart, wipe, and talk to
//! each node over its client port.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drasi_store_protocol::{ClusterInfo, ClusterRole, StepDownResponse, encode_query, routes};

use crate::ServerProcess;
use crate::partition::{self, Partitions};

pub const CLIENT_TOKEN: &str = "replication-client-token";
pub const PEER_TOKEN: &str = "replication-peer-token-0123";

/// Reserves `n` free loopback ports. The peer addresses must be known
/// before any node starts, so they cannot be `:0`; the tiny window between
/// closing these sockets and the nodes binding them is accepted.
///
/// The ports are picked below the kernel's ephemeral range: a node that is
/// killed and restarted binds its ports again, and while it was down an
/// outgoing connection of any process here (the tests run in parallel)
/// could have been given a port from that range as its local port, failing
/// the restart with "address already in use".
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    use rand::Rng as _;
    const LOWEST: u16 = 10_000;
    let ephemeral = first_ephemeral_port();
    let mut listeners = Vec::with_capacity(n);
    if ephemeral < LOWEST + 1_000 {
        // No room below the range: let the kernel choose.
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0")?);
        }
    } else {
        let mut rng = rand::thread_rng();
        let mut tries = 0;
        while listeners.len() < n {
            tries += 1;
            if tries > 10_000 {
                bail!("no free loopback port between {LOWEST} and {ephemeral}");
            }
            if let Ok(l) = TcpListener::bind(("127.0.0.1", rng.gen_range(LOWEST..ephemeral))) {
                listeners.push(l);
            }
        }
    }
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The first port the kernel hands out to outgoing connections.
fn first_ephemeral_port() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

pub struct Cluster {
    binary: PathBuf,
    root: PathBuf,
    /// `(client port, peer port)` of each node, fixed for its life so that
    /// a restarted node is found where it was.
    ports: Vec<(u16, u16)>,
    peers: String,
    /// Behind a lock so that a test can kill and restart nodes while its
    /// writers share the cluster.
    nodes: std::sync::Mutex<Vec<Option<ServerProcess>>>,
    http: reqwest::Client,
    extra: Vec<String>,
    /// Where each node's peer listener binds when it differs from the
    /// address `--peers` lists (a proxy sits in between).
    peer_listen: Option<Vec<SocketAddr>>,
    /// Extra environment of every node (the benchmark re-runs its own
    /// executable as the server, selected by a variable).
    envs: Vec<(String, String)>,
    /// `https` when the nodes serve TLS (`start_tls`).
    scheme: &'static str,
    /// Whether nodes get `--peer-token-file` (not with `start_tls`: mutual
    /// TLS alone authenticates the peers there).
    peer_token: bool,
}

impl Cluster {
    /// Starts `n` nodes under `root` (one data directory each).
    pub fn start(binary: &str, root: &Path, n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        Self::start_with(binary, root, n, extra, None, Vec::new())
    }

    /// Like [`Cluster::start`], with `envs` in every node's environment.
    pub fn start_with_env(
        binary: &str,
        envs: &[(&str, &str)],
        root: &Path,
        n: usize,
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        let envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_with(binary, root, n, extra, None, envs)
    }

    /// Like [`Cluster::start`], for nodes that serve TLS and authenticate
    /// their peers by mutual TLS alone (their `extra` arguments name the
    /// certificate and the CA; they get no peer token): the client port is
    /// spoken to over HTTPS, trusting `ca_pem`.
    pub fn start_tls(
        binary: &str,
        root: &Path,
        n: usize,
        extra: &[&str],
        ca_pem: &str,
    ) -> anyhow::Result<Cluster> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
            .build()?;
        Self::start_ports_with(
            binary,
            root,
            free_ports(2 * n)?,
            extra,
            None,
            Vec::new(),
            ("https", http),
        )
    }

    /// Like [`Cluster::start`], with every peer link going through a
    /// [`Partitions`] proxy that can cut links between nodes.
    pub async fn start_partitionable(
        binary: &str,
        root: &Path,
        n: usize,
        extra: &[&str],
    ) -> anyhow::Result<(Cluster, Partitions)> {
        let backs = free_ports(n)?;
        let (fronts, cluster) = {
            let ports = free_ports(2 * n)?;
            let fronts: Vec<SocketAddr> = ports
                .chunks(2)
                .map(|c| SocketAddr::from(([127, 0, 0, 1], c[1])))
                .collect();
            (fronts, ports)
        };
        let back_addrs: Vec<SocketAddr> = backs
            .iter()
            .enumerate()
            .map(|(i, port)| SocketAddr::new(partition::node_ip(i), *port))
            .collect();
        let partitions = Partitions::start(&fronts, &back_addrs).await?;
        let binary = binary.to_string();
        let root = root.to_path_buf();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let cluster = tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            Self::start_ports(
                &binary,
                &root,
                cluster,
                &extra,
                Some(back_addrs),
                Vec::new(),
            )
        })
        .await??;
        Ok((cluster, partitions))
    }

    fn start_with(
        binary: &str,
        root: &Path,
        n: usize,
        extra: &[&str],
        peer_listen: Option<Vec<SocketAddr>>,
        envs: Vec<(String, String)>,
    ) -> anyhow::Result<Cluster> {
        Self::start_ports(binary, root, free_ports(2 * n)?, extra, peer_listen, envs)
    }

    fn start_ports(
        binary: &str,
        root: &Path,
        ports: Vec<u16>,
        extra: &[&str],
        peer_listen: Option<Vec<SocketAddr>>,
        envs: Vec<(String, String)>,
    ) -> anyhow::Result<Cluster> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?;
        Self::start_ports_with(
            binary,
            root,
            ports,
            extra,
            peer_listen,
            envs,
            ("http", http),
        )
    }

    fn start_ports_with(
        binary: &str,
        root: &Path,
        ports: Vec<u16>,
        extra: &[&str],
        peer_listen: Option<Vec<SocketAddr>>,
        envs: Vec<(String, String)>,
        (scheme, http): (&'static str, reqwest::Client),
    ) -> anyhow::Result<Cluster> {
        let n = ports.len() / 2;
        let ports: Vec<(u16, u16)> = ports.chunks(2).map(|c| (c[0], c[1])).collect();
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("{i}=127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(root.join("peer-token"), format!("{PEER_TOKEN}\n"))?;
        std::fs::write(root.join("client-token"), format!("{CLIENT_TOKEN}\n"))?;
        let cluster = Cluster {
            binary: binary.into(),
            root: root.to_path_buf(),
            ports,
            peers,
            nodes: std::sync::Mutex::new((0..n).map(|_| None).collect()),
            http,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            peer_listen,
            envs,
            scheme,
            peer_token: scheme == "http",
        };
        // Start them together, as a StatefulSet with Parallel pods does:
        // the first node initializes the cluster and needs a quorum.
        let commands = (0..n)
            .map(|i| cluster.spawn_command(i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let spawned: Vec<_> = commands
            .into_iter()
            .enumerate()
            .map(|(i, cmd)| {
                let dir = cluster.data_dir(i);
                std::thread::spawn(move || {
                    ServerProcess::spawn(cmd, dir, Some(CLIENT_TOKEN.into()))
                })
            })
            .collect();
        for (i, handle) in spawned.into_iter().enumerate() {
            let node = handle
                .join()
                .map_err(|_| anyhow::anyhow!("starting node {i} panicked"))?
                .with_context(|| format!("starting node {i}"))?;
            cluster.nodes()[i] = Some(node);
        }
        Ok(cluster)
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Vec<Option<ServerProcess>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.join(format!("node-{i}"))
    }

    fn spawn_command(&self, i: usize) -> anyhow::Result<std::process::Command> {
        let dir = self.data_dir(i);
        std::fs::create_dir_all(&dir)?;
        let (client, peer) = self.ports[i];
        let mut cmd = std::process::Command::new(&self.binary);
        if self.peer_token {
            cmd.arg("--peer-token-file")
                .arg(self.root.join("peer-token"));
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{client}"))
            .arg("--data-dir")
            .arg(&dir)
            .arg("--log-format")
            .arg("text")
            .arg("--auth-token-file")
            .arg(self.root.join("client-token"))
            .arg("--node-id")
            .arg(i.to_string())
            .arg("--peers")
            .arg(&self.peers)
            .arg("--peer-listen")
            .arg(match &self.peer_listen {
                Some(addrs) => addrs[i].to_string(),
                None => format!("127.0.0.1:{peer}"),
            })
            .args(&self.extra)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        Ok(cmd)
    }

    /// The client URL of node `i` (whether it runs or not).
    pub fn url(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.ports[i].0)
    }

    /// Every node's client URL, comma-separated (`DRASI_STATE_STORE_URL`).
    pub fn urls(&self) -> String {
        (0..self.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn peer_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i].1))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes()[i].is_some()
    }

    pub fn log(&self, i: usize) -> String {
        self.nodes()[i]
            .as_ref()
            .map(ServerProcess::log)
            .unwrap_or_default()
    }

    /// `kill -9` node `i`.
    pub fn kill9(&self, i: usize) -> anyhow::Result<()> {
        let node = self.nodes()[i].take();
        match node {
            Some(node) => node.kill9(),
            None => bail!("node {i} is not running"),
        }
    }

    /// Stops node `i` as Kubernetes does when it deletes a pod: SIGTERM,
    /// then a clean exit (bounded).
    pub fn stop(&self, i: usize) -> anyhow::Result<()> {
        let node = self.nodes()[i].take();
        match node {
            Some(node) => node.terminate(Duration::from_secs(30)).map(drop),
            None => bail!("node {i} is not running"),
        }
    }

    /// Starts node `i` again on its data directory and ports.
    pub fn restart(&self, i: usize) -> anyhow::Result<()> {
        if self.is_running(i) {
            bail!("node {i} is still running");
        }
        let cmd = self.spawn_command(i)?;
        let node = ServerProcess::spawn(cmd, self.data_dir(i), Some(CLIENT_TOKEN.into()))?;
        self.nodes()[i] = Some(node);
        Ok(())
    }

    /// Deletes node `i`'s data directory (it must be stopped): a lost volume.
    pub fn wipe(&self, i: usize) -> anyhow::Result<()> {
        if self.is_running(i) {
            bail!("node {i} is still running");
        }
        std::fs::remove_dir_all(self.data_dir(i)).with_context(|| format!("wiping node {i}"))?;
        Ok(())
    }

    fn authed(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        self.http.request(method, url).bearer_auth(CLIENT_TOKEN)
    }

    pub async fn cluster_info(&self, i: usize) -> anyhow::Result<ClusterInfo> {
        let r = self
            .authed(
                reqwest::Method::GET,
                format!("{}{}", self.url(i), routes::CLUSTER),
            )
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .error_for_status()?;
        Ok(serde_json::from_slice(&r.bytes().await?)?)
    }

    /// Waits until node `i` has applied everything the leader had
    /// committed when the wait started.
    pub async fn caught_up(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let leader = self.wait_for_leader(timeout).await?;
        let target = self.cluster_info(leader).await?.commit_index;
        loop {
            if let Ok(info) = self.cluster_info(i).await
                && info.applied_index >= target
                && info.leader_id.is_some()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {i} did not catch up to index {target} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /v1/cluster/step-down` on node `i`.
    pub async fn step_down(&self, i: usize) -> anyhow::Result<StepDownResponse> {
        let r = self
            .authed(
                reqwest::Method::POST,
                format!("{}{}", self.url(i), routes::CLUSTER_STEP_DOWN),
            )
            .timeout(Duration::from_secs(15))
            .send()
            .await?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            bail!(
                "step-down on node {i} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Node `i`'s `/readyz`: status code and body.
    pub async fn readyz(&self, i: usize) -> anyhow::Result<(u16, String)> {
        let r = self
            .http
            .get(format!("{}/readyz", self.url(i)))
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// The node every running node agrees leads, once one does and every
    /// running node reports it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut roles = Vec::new();
            for i in (0..self.len()).filter(|i| self.is_running(*i)) {
                match self.cluster_info(i).await {
                    Ok(info) => {
                        leaders.push(info.leader_id);
                        roles.push((i, info.role));
                    }
                    Err(_) => leaders.push(None),
                }
            }
            if let Some(Some(leader)) = leaders.first().copied() {
                let leader = leader as usize;
                let agreed = leaders.iter().all(|l| *l == Some(leader as u64));
                let leads = roles.contains(&(leader, ClusterRole::Leader));
                if agreed && leads && self.is_running(leader) {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {timeout:?}: {leaders:?} {roles:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request to node `i`'s client port: `route`, the store, and the
    /// key when there is one.
    fn on_node(
        &self,
        method: reqwest::Method,
        i: usize,
        route: &str,
        store: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let query = encode_query(store, key);
        self.authed(method, format!("{}{route}?{query}", self.url(i)))
    }

    /// PUT one value through node `i`.
    pub async fn put(
        &self,
        i: usize,
        store: &str,
        key: &str,
        value: &[u8],
    ) -> anyhow::Result<reqwest::Response> {
        let request = self.on_node(reqwest::Method::PUT, i, routes::KV, store, Some(key));
        Ok(request.body(value.to_vec()).send().await?)
    }

    /// DELETE one key through node `i`.
    pub async fn delete(
        &self,
        i: usize,
        store: &str,
        key: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let request = self.on_node(reqwest::Method::DELETE, i, routes::KV, store, Some(key));
        Ok(request.send().await?)
    }

    /// Atomic set_many through node `i`.
    pub async fn set_many(
        &self,
        i: usize,
        store: &str,
        entries: &[(String, Vec<u8>)],
    ) -> anyhow::Result<reqwest::Response> {
        let frame = drasi_store_protocol::batch::encode_entries(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        );
        let request = self.on_node(reqwest::Method::POST, i, routes::SET_MANY, store, None);
        Ok(request.body(frame).send().await?)
    }

    /// GET one value through node `i` (a linearizable read).
    pub async fn get(&self, i: usize, store: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let r = self.get_response(i, store, key).await?;
        match r.status().as_u16() {
            200 => Ok(Some(r.bytes().await?.to_vec())),
            404 => Ok(None),
            s => bail!("GET through node {i} answered {s}: {}", r.text().await?),
        }
    }

    /// The raw answer to a GET of one key through node `i`.
    pub async fn get_response(
        &self,
        i: usize,
        store: &str,
        key: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let request = self.on_node(reqwest::Method::GET, i, routes::KV, store, Some(key));
        Ok(request.send().await?)
    }

    /// Every key of `store` with its value, as node `i` holds them.
    pub async fn contents(
        &self,
        i: usize,
        store: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<String, Vec<u8>>> {
        let r = self
            .on_node(reqwest::Method::GET, i, routes::STORE_KEYS, store, None)
            .send()
            .await?;
        if r.status().as_u16() != 200 {
            bail!(
                "listing {store} on node {i}: {} {}",
                r.status(),
                r.text().await?
            );
        }
        let list: drasi_store_protocol::KeyList = serde_json::from_slice(&r.bytes().await?)?;
        let mut out = std::collections::BTreeMap::new();
        for key in list.keys {
            if let Some(value) = self.get(i, store, &key).await? {
                out.insert(key, value);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_ports(16).unwrap();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 16);
        let ephemeral = first_ephemeral_port();
        for port in ports {
            if ephemeral >= 11_000 {
                assert!(port < ephemeral, "{port} is in the ephemeral range");
            }
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
