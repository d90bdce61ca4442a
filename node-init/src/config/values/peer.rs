//! `kubernetes.peers`: the other nodes of the cluster, for `verify`'s
//! `peers` check. An entry is an address (a control-plane node, the shape
//! of a 1- or 3-node gateway) or `{address: A, role: worker}`, so a worker
//! is asked only on the port a worker listens on.

use std::fmt;
use std::net::IpAddr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// What a peer runs, which decides the ports it listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerRole {
    ControlPlane,
    Worker,
}

impl PeerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ControlPlane => "control-plane",
            Self::Worker => "worker",
        }
    }

    /// The ports a node of this role listens on once it is up: the API
    /// server, etcd's clients and peers, and the kubelet.
    pub fn ports(self) -> &'static [u16] {
        match self {
            Self::ControlPlane => &[6443, 2379, 2380, 10250],
            Self::Worker => &[10250],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    pub role: PeerRole,
}

const EXPECTED: &str = "an IP address, or {address: IP, role: control-plane|worker}";

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PeerVisitor)
    }
}

struct PeerVisitor;

impl<'de> Visitor<'de> for PeerVisitor {
    type Value = Peer;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Peer, E> {
        let address = s.parse().map_err(|_| E::custom(format!("{s:?} is not an IP address (expected {EXPECTED})")))?;
        Ok(Peer { address, role: PeerRole::ControlPlane })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Peer, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            address: IpAddr,
            #[serde(default = "control_plane")]
            role: PeerRole,
        }
        fn control_plane() -> PeerRole {
            PeerRole::ControlPlane
        }
        let e = Entry::deserialize(de::value::MapAccessDeserializer::new(&mut map))?;
        Ok(Peer { address: e.address, role: e.role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(yaml: &str) -> Result<Vec<Peer>, String> {
        serde_saphyr::from_str::<Vec<Peer>>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn an_address_is_a_control_plane_peer_and_a_map_may_say_worker() {
        let p = peers("[10.0.0.11, {address: 10.0.0.21, role: worker}, {address: \"fd00::5\"}]").unwrap();
        assert_eq!(p[0], Peer { address: "10.0.0.11".parse().unwrap(), role: PeerRole::ControlPlane });
        assert_eq!(p[1].role, PeerRole::Worker);
        assert_eq!(p[1].role.ports(), &[10250]);
        assert_eq!(p[2].role, PeerRole::ControlPlane);
    }

    #[test]
    fn a_name_or_an_unknown_role_is_refused_with_what_was_expected() {
        let e = peers("[node2.maas]").unwrap_err();
        assert!(e.contains("\"node2.maas\" is not an IP address (expected an IP address, or {address"), "{e}");
        let e = peers("[{address: 10.0.0.1, role: init}]").unwrap_err();
        assert!(e.contains("control-plane") && e.contains("worker"), "{e}");
        let e = peers("[{address: 10.0.0.1, port: 1}]").unwrap_err();
        assert!(e.contains("port"), "{e}");
    }
}
