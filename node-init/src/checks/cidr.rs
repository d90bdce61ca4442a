//! The pod and service CIDRs must not overlap each other, any address on a
//! local interface, or any IPv4 route of the main table (read from
//! `/proc/net/route`), or pod traffic is routed to the machine network.

use std::net::Ipv4Addr;

use anyhow::Result;
use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net};

use super::kernel::read;
use super::{Check, Finding, Inputs, fail, pass};

pub struct Overlap;

/// `(interface, destination)` of every non-default IPv4 route.
fn routes(table: &str) -> Vec<(String, IpNet)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| Ipv4Addr::from(v.swap_bytes()));
            let (dst, mask) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            let net = Ipv4Net::with_netmask(dst, mask).ok()?;
            (net.prefix_len() > 0).then(|| (f[0].to_owned(), IpNet::V4(net)))
        })
        .collect()
}

#[async_trait]
impl Check for Overlap {
    fn name(&self) -> &'static str {
        "cidr_overlap"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let (pod, svc) = i.config.cidrs();
        if pod.overlaps(&svc.0) {
            return Ok(fail(format!("pod CIDR {pod} overlaps service CIDR {svc}")));
        }
        let routed = routes(&read(i, "/proc/net/route")?);
        let addresses = &i.node.addresses;
        let local = addresses.iter().map(|a| (a.interface.clone(), a.net.trunc(), "address"));
        let checked = addresses.len() + routed.len();
        for (iface, net, kind) in local.chain(routed.into_iter().map(|(i, n)| (i, n, "route"))) {
            for (name, cidr) in [("pod", pod), ("service", svc)] {
                if cidr.overlaps(&net) {
                    return Ok(fail(format!("{name} CIDR {cidr} overlaps {kind} {net} on {iface}")));
                }
            }
        }
        Ok(pass(format!("pod {pod} and service {svc} clear of {checked} local addresses and routes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_route() {
        let t = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(routes(t), [("eth0".to_owned(), "192.168.0.0/24".parse().unwrap())]);
    }
}
