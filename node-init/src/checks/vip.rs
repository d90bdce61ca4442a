//! The API-server VIP: inside a local subnet, not a local address; before
//! `init` nobody may hold it (asked by ARP, not ping: a host may drop ICMP
//! but must answer ARP to be reachable at all); before a join its port must
//! accept TCP.
//!
//! The ARP request is the kernel's own: a datagram to the discard port makes
//! the kernel resolve the VIP on the right interface, and its neighbour
//! table (`/proc/net/arp`) then holds the owner's MAC or nothing. That needs
//! no raw socket and no CAP_NET_RAW. An IPv6 VIP is asked the same way: the
//! datagram makes the kernel send neighbour solicitation, and its IPv6
//! neighbour table (rtnetlink, [`crate::neighbours`]) holds the answer. The
//! VIP is "free" only when the kernel did ask (an entry for it appeared);
//! where it cannot (no IPv6 route, IPv6 off) or did not (the VIP routed
//! through a gateway), the check reports `error` with why.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use tokio::time::Instant;

use super::{Check, Finding, Inputs, fail, pass, skip};
use crate::config::Role;

/// How long an owner has to answer ARP; hosts answer within milliseconds.
const ARP_WAIT: Duration = Duration::from_millis(1500);
const ARP_FLAG_COMPLETE: u32 = 0x2;

pub struct Vip;

#[async_trait]
impl Check for Vip {
    fn name(&self) -> &'static str {
        "vip"
    }
    async fn run(&self, f: &Inputs<'_>) -> Result<Finding> {
        let Some(k) = &f.config.kubernetes else { return Ok(skip("no kubernetes section")) };
        let Some(vip) = k.endpoint.ip() else {
            return Ok(skip(format!("the endpoint {} is a name, not a VIP", k.endpoint.host)));
        };
        let addresses = &f.node.addresses;
        if let Some(a) = addresses.iter().find(|a| a.net.addr() == vip) {
            return Ok(fail(format!("VIP {vip} is already an address of this node (on {})", a.interface)));
        }
        let Some(home) = addresses.iter().find(|a| a.net.contains(&vip)) else {
            let nets: Vec<String> = addresses.iter().map(|a| format!("{} on {}", a.net.trunc(), a.interface)).collect();
            return Ok(fail(format!("VIP {vip} is in no local subnet ({})", nets.join(", "))));
        };
        let place = format!("{} on {}", home.net.trunc(), home.interface);
        let set = k.vip.as_ref().and_then(|v| v.interface.as_deref());
        if let Some(i) = set.filter(|i| *i != home.interface) {
            return Ok(fail(format!("VIP {vip} is in {place}, but kubernetes.vip.interface is {i}")));
        }
        // What `run` derives when the config names no interface.
        let place =
            if set.is_none() && k.vip.is_some() { format!("{place}, kube-vip's interface derived") } else { place };
        if k.role() == Role::Init {
            let wait = ARP_WAIT.min(f.query_timeout);
            let waited = humantime::format_duration(wait);
            return Ok(match vip {
                IpAddr::V4(_) => {
                    match arp_owner(f, vip, wait).await.with_context(|| format!("asking ARP for {vip}"))? {
                        Some(mac) => fail(format!("VIP {vip} ({place}) is already held: {mac} answers ARP for it")),
                        None => pass(format!("VIP {vip} ({place}) is free: no ARP answer in {waited}")),
                    }
                }
                IpAddr::V6(v6) => match ndp_owner(v6, wait)
                    .await
                    .with_context(|| format!("asking for {vip} by neighbour solicitation on {}", home.interface))?
                {
                    Some(mac) => fail(format!(
                        "VIP {vip} ({place}) is already held: {mac} on {} answers neighbour solicitation for it",
                        home.interface
                    )),
                    None => {
                        pass(format!("VIP {vip} ({place}) is free: no answer to neighbour solicitation in {waited}"))
                    }
                },
            });
        }
        let port = SocketAddr::new(vip, k.endpoint.port);
        Ok(match tokio::time::timeout(f.query_timeout, tokio::net::TcpStream::connect(port)).await {
            Ok(Ok(_)) => pass(format!("VIP {port} ({place}) accepts TCP")),
            Ok(Err(e)) => fail(format!("VIP {port} ({place}) does not accept TCP: {e}")),
            Err(_) => fail(format!(
                "VIP {port} ({place}): no TCP answer within {}",
                humantime::format_duration(f.query_timeout)
            )),
        })
    }
}

/// The MAC that answers ARP for `ip`, an IPv4 address, if one does within
/// `wait`.
async fn arp_owner(f: &Inputs<'_>, ip: IpAddr, wait: Duration) -> Result<Option<String>> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    let end = Instant::now() + wait;
    let mut next_send = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next_send {
            // The discard port; the datagram only exists to start ARP.
            let _ = socket.send_to(b"node-init vip probe", SocketAddr::new(ip, 9)).await;
            next_send = Instant::now() + Duration::from_millis(500);
        }
        let table = f.root.read_string_opt("/proc/net/arp").ok().flatten().unwrap_or_default();
        if let Some(mac) = complete_entry(&table, ip) {
            return Ok(Some(mac));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// The MAC that answers the kernel's neighbour solicitation for `ip`, if
/// one does within `wait`. An error when the kernel cannot send to `ip`, or
/// sent nothing for it (no entry for `ip` ever appeared).
async fn ndp_owner(ip: Ipv6Addr, wait: Duration) -> Result<Option<String>> {
    let socket = tokio::net::UdpSocket::bind("[::]:0").await.context("opening an IPv6 socket (is IPv6 off?)")?;
    let end = Instant::now() + wait;
    let mut next_send = Instant::now();
    let mut asked = false;
    while Instant::now() < end {
        if Instant::now() >= next_send {
            // The discard port; the datagram only exists to start solicitation.
            socket
                .send_to(b"node-init vip probe", SocketAddr::new(IpAddr::V6(ip), 9))
                .await
                .with_context(|| format!("the kernel cannot send to {ip}"))?;
            next_send = Instant::now() + Duration::from_millis(500);
        }
        let table = tokio::task::spawn_blocking(crate::neighbours::ipv6).await??;
        if let Some(entry) = table.iter().find(|n| n.ip == IpAddr::V6(ip)) {
            asked = true;
            if let Some(mac) = entry.owner() {
                return Ok(Some(mac));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !asked {
        bail!("the kernel never solicited {ip}: no neighbour entry appeared (is it routed through a gateway?)");
    }
    Ok(None)
}

/// The hardware address of a complete entry for `ip` in `/proc/net/arp`.
pub(super) fn complete_entry(table: &str, ip: IpAddr) -> Option<String> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
        let mac = *f.get(3)?;
        (f[0].parse::<IpAddr>().ok()? == ip && flags & ARP_FLAG_COMPLETE != 0 && mac != "00:00:00:00:00:00")
            .then(|| format!("{mac} on {}", f.get(5).unwrap_or(&"?")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_entries_only() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.0.0.5         0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                 10.0.0.6         0x1         0x2         52:54:00:12:34:56     *        eth0\n";
        assert_eq!(complete_entry(t, "10.0.0.5".parse().unwrap()), None);
        assert_eq!(complete_entry(t, "10.0.0.6".parse().unwrap()).as_deref(), Some("52:54:00:12:34:56 on eth0"));
        assert_eq!(complete_entry(t, "10.0.0.7".parse().unwrap()), None);
    }
}
