//! `--peers`: the voters of a replicated store.

use std::collections::BTreeMap;
use std::fmt;

use openraft::BasicNode;

use super::NodeId;

/// Every voter, by id, with its peer address (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(BTreeMap<NodeId, String>);

impl Peers {
    /// Parses `<id>=<host:port>,...`. Refuses a repeated id, an empty or
    /// port-less address, and an empty list, naming the offending item.
    pub fn parse(text: &str) -> Result<Peers, String> {
        let mut peers = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, addr) = item
                .split_once('=')
                .ok_or_else(|| format!("peer {item:?} is not <id>=<host:port>"))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| format!("peer {item:?}: the id is not a non-negative integer"))?;
            let addr = addr.trim();
            let port = addr
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty())
                .map(|(_, port)| port)
                .ok_or_else(|| format!("peer {item:?}: the address has no host:port"))?;
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("peer {item:?}: {port:?} is not a port"))?;
            if peers.insert(id, addr.to_string()).is_some() {
                return Err(format!("peer id {id} is listed twice"));
            }
        }
        if peers.is_empty() {
            return Err("no peers listed".into());
        }
        Ok(Peers(peers))
    }

    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.0.keys().copied()
    }

    /// The voters as openraft members.
    pub fn members(&self) -> BTreeMap<NodeId, BasicNode> {
        self.0
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect()
    }
}

impl fmt::Display for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (id, addr) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{id}={addr}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_operator_form() {
        let p =
            Peers::parse("0=s-0.s-peers.ns.svc:7071, 1=s-1.s-peers.ns.svc:7071,2=127.0.0.1:9000")
                .unwrap();
        assert_eq!(p.ids().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(p.address(2), Some("127.0.0.1:9000"));
        assert_eq!(p.members()[&1].addr, "s-1.s-peers.ns.svc:7071");
        assert_eq!(Peers::parse(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn refuses_bad_lists_with_the_reason() {
        for (text, why) in [
            ("", "no peers"),
            ("0=a:1,0=b:2", "listed twice"),
            ("x=a:1", "not a non-negative integer"),
            ("0=a", "no host:port"),
            ("0=:7071", "no host:port"),
            ("0=a:http", "is not a port"),
            ("0=a:0", "is not a port"),
            ("0", "is not <id>=<host:port>"),
        ] {
            let err = Peers::parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
