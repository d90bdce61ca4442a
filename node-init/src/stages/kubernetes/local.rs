//! What this node puts into its kubeadm config, derived from the node
//! rather than asked of the operator per machine: its name (the FQDN MAAS
//! gave), the API server's advertise address and the kubelet's `node-ip`
//! (its address in the VIP's subnet, not whatever NIC holds the default
//! route, often the PXE one), kube-vip's interface (the one carrying that
//! address), and the provider-id `maas:///<zone>/<system-id>` (Cluster API
//! MAAS's form). Each is overruled by its config key.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Result, bail};

use crate::config::Kubernetes;
use crate::net::Address;
use crate::node::Node;

/// This node's part of the kubeadm config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// `nodeRegistration.name`.
    pub name: Option<String>,
    /// `localAPIEndpoint.advertiseAddress` on control-plane nodes.
    pub advertise: Option<IpAddr>,
    /// Kubelet flags: the derived ones, then the config's, which win.
    pub kubelet_args: BTreeMap<String, String>,
    /// Where kube-vip announces the VIP.
    pub vip_interface: Option<String>,
}

impl Local {
    /// Only a name: what a config renders to with nothing derived.
    pub fn named(name: &str) -> Self {
        Self { name: Some(name.to_owned()), ..Self::default() }
    }
}

/// The node's address (and its interface) in the subnet that holds `ip`.
fn home(node: &Node, ip: IpAddr) -> Option<&Address> {
    node.addresses.iter().find(|a| a.net.contains(&ip) && a.net.addr() != ip)
}

/// Derives what the config leaves out. A VIP that no interface of a live
/// node is in cannot be announced: that is an error naming the key to set.
pub fn derive(node: &Node, k: &Kubernetes) -> Result<Local> {
    let home = k.endpoint.ip().and_then(|vip| home(node, vip));
    let mut kubelet_args = BTreeMap::new();
    if let Some(a) = home {
        kubelet_args.insert("node-ip".to_owned(), a.net.addr().to_string());
    }
    if let (Some(zone), Some(id)) = (&node.zone, &node.system_id) {
        kubelet_args.insert("provider-id".to_owned(), format!("maas:///{zone}/{id}"));
    }
    kubelet_args.extend(k.kubelet_extra_args.iter().map(|(f, v)| (f.clone(), v.clone())));
    let vip_interface = match &k.vip {
        None => None,
        Some(v) => match (&v.interface, home) {
            (Some(i), _) => Some(i.clone()),
            (None, Some(a)) => Some(a.interface.clone()),
            (None, None) => bail!(
                "no interface of this node is in the subnet of the VIP {}: set kubernetes.vip.interface",
                k.endpoint.host
            ),
        },
    };
    Ok(Local {
        name: node.fqdn().map(str::to_owned),
        advertise: k.advertise_address.or(home.map(|a| a.net.addr())),
        kubelet_args,
        vip_interface,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addresses: &[(&str, &str)]) -> Node {
        Node {
            fqdn: Ok("node1.dc1.example".into()),
            addresses: addresses
                .iter()
                .map(|(i, n)| Address { interface: (*i).to_owned(), net: n.parse().unwrap() })
                .collect(),
            system_id: Some("abc123".into()),
            zone: Some("zone1".into()),
            ..Node::default()
        }
    }

    fn k(extra: &str) -> Kubernetes {
        let yaml = format!(
            "kubernetes:\n  role: control-plane\n  endpoint: 10.11.12.100:6443\n  token: abcdef.0123456789abcdef\n  \
             ca_cert_hashes: [sha256:{}]\n  certificate_key: {}\n{extra}",
            "a".repeat(64),
            "b".repeat(64)
        );
        crate::config::parse(&yaml, "t").unwrap().kubernetes.unwrap()
    }

    #[test]
    fn the_address_in_the_vips_subnet_wins_over_the_pxe_nic() {
        // eno1 carries the PXE network and the default route; bond0 the
        // VIP's subnet.
        let n = node(&[("eno1", "10.0.0.7/24"), ("bond0", "10.11.12.21/24")]);
        let l = derive(&n, &k("  vip: {}\n")).unwrap();
        assert_eq!(l.advertise, Some("10.11.12.21".parse().unwrap()));
        assert_eq!(l.kubelet_args["node-ip"], "10.11.12.21");
        assert_eq!(l.kubelet_args["provider-id"], "maas:///zone1/abc123");
        assert_eq!(l.vip_interface.as_deref(), Some("bond0"));
        assert_eq!(l.name.as_deref(), Some("node1.dc1.example"));
    }

    #[test]
    fn the_config_overrules_what_is_derived() {
        let n = node(&[("bond0", "10.11.12.21/24")]);
        let l = derive(
            &n,
            &k("  vip: {interface: eth9}\n  advertise_address: 10.11.12.50\n  \
                kubelet_extra_args: {node-ip: 10.11.12.60, provider-id: 'maas:///z/x'}\n"),
        )
        .unwrap();
        assert_eq!(l.advertise, Some("10.11.12.50".parse().unwrap()));
        assert_eq!(l.kubelet_args["node-ip"], "10.11.12.60");
        assert_eq!(l.kubelet_args["provider-id"], "maas:///z/x");
        assert_eq!(l.vip_interface.as_deref(), Some("eth9"));
    }

    #[test]
    fn a_vip_outside_every_subnet_names_the_key_to_set() {
        let n = node(&[("eno1", "10.0.0.7/24")]);
        let err = derive(&n, &k("  vip: {}\n")).unwrap_err().to_string();
        assert!(err.contains("set kubernetes.vip.interface"), "{err}");
        // Without a VIP to announce, nothing is asked of the interface.
        let l = derive(&n, &k("")).unwrap();
        assert_eq!(l.vip_interface, None);
        assert_eq!(l.advertise, None);
        assert!(!l.kubelet_args.contains_key("node-ip"));
    }
}
