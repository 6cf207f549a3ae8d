//! A fault-injecting TCP proxy for peer traffic: one listener in front of
//! each node's peer port, which can cut any set of links between nodes.
//!
//! Each node `i` binds its peer listener on its own loopback address
//! (`127.0.0.{2+i}`) and its calls to peers leave from that address, so the
//! proxy in front of node `j` knows which node a connection comes from.
//! Cutting a link drops the connections on it at once and refuses new
//! ones, in both directions: the nodes see exactly what a network
//! partition shows them (resets, refused connections).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The loopback address node `i` uses for peer traffic.
pub fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))
}

/// Which node a peer connection comes from, by its source address.
fn node_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] >= 2 => {
            Some(usize::from(v4.octets()[3] - 2))
        }
        _ => None,
    }
}

#[derive(Default)]
struct Links {
    /// Cut links, as ordered pairs `(lower id, higher id)`.
    cut: BTreeSet<(usize, usize)>,
}

impl Links {
    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }
}

pub struct Partitions {
    links: Arc<Mutex<Links>>,
    /// Bumped on every change, so live connections re-check their link.
    changed: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Partitions {
    /// Starts one proxy per node: `fronts[j]` (what `--peers` lists) to
    /// `backs[j]` (where node `j`'s peer listener really is).
    pub async fn start(fronts: &[SocketAddr], backs: &[SocketAddr]) -> anyhow::Result<Partitions> {
        let links = Arc::new(Mutex::new(Links::default()));
        let (changed, _) = watch::channel(0u64);
        let mut tasks = Vec::new();
        for (j, (front, back)) in fronts.iter().zip(backs).enumerate() {
            let listener = TcpListener::bind(front).await?;
            let links = links.clone();
            let changed = changed.subscribe();
            let back = *back;
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((inbound, from)) = listener.accept().await else {
                        continue;
                    };
                    let Some(i) = node_of(from.ip()) else {
                        continue;
                    };
                    if links.lock().unwrap().is_cut(i, j) {
                        drop(inbound);
                        continue;
                    }
                    let links = links.clone();
                    let mut changed = changed.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(back).await else {
                            return;
                        };
                        let mut inbound = inbound;
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let cut = async {
                            loop {
                                if changed.changed().await.is_err() {
                                    std::future::pending::<()>().await;
                                }
                                if links.lock().unwrap().is_cut(i, j) {
                                    return;
                                }
                            }
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            () = cut => {}
                        }
                    });
                }
            }));
        }
        Ok(Partitions {
            links,
            changed,
            tasks,
        })
    }

    /// Cuts every link between `node` and the others.
    pub fn isolate(&self, node: usize, nodes: usize) {
        let mut links = self.links.lock().unwrap();
        for other in (0..nodes).filter(|o| *o != node) {
            links.cut.insert((node.min(other), node.max(other)));
        }
        drop(links);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.links.lock().unwrap().cut.clear();
        self.changed.send_modify(|n| *n += 1);
    }
}

impl Drop for Partitions {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
