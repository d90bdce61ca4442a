//! The node's own addresses, read from the kernel (getifaddrs, which glibc
//! answers over netlink). Loopback and link-local addresses are left out:
//! they are never how the cluster reaches a node.

use std::net::IpAddr;

use anyhow::{Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub interface: String,
    pub net: ipnet::IpNet,
}

pub fn local_addresses() -> Result<Vec<Address>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("listing network interfaces")? {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else { continue };
        let pair = match (addr.as_sockaddr_in(), mask.as_sockaddr_in(), addr.as_sockaddr_in6(), mask.as_sockaddr_in6())
        {
            (Some(a), Some(m), _, _) => Some((IpAddr::V4(a.ip()), IpAddr::V4(m.ip()))),
            (_, _, Some(a), Some(m)) => Some((IpAddr::V6(a.ip()), IpAddr::V6(m.ip()))),
            _ => None,
        };
        let Some((ip, mask)) = pair else { continue };
        if !is_node_address(ip) {
            continue;
        }
        if let Ok(net) = ipnet::IpNet::with_netmask(ip, mask) {
            out.push(Address { interface: ifa.interface_name.clone(), net });
        }
    }
    Ok(out)
}

fn is_node_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_unspecified(),
    }
}
