//! `peers`: the cluster's other nodes (`kubernetes.peers`) can be reached
//! the way the cluster will use them.
//!
//! - TCP on the ports the peer's role listens on (control-plane 6443,
//!   2379, 2380, 10250; worker 10250), reported per port. Before the
//!   cluster exists nothing listens yet, so a refused connection (the
//!   peer's RST) counts as reachable; no answer, or the kernel's "no route"
//!   after ARP went unanswered, does not.
//! - Control-plane peers: 10 ICMP echoes, every one answered, the slowest
//!   under 100 ms (etcd's heartbeat and election timers assume a LAN).
//! - When the interface toward the peer has an MTU other than 1500 (jumbo
//!   frames, or an overlay's smaller one): an echo of exactly that size,
//!   with DF set, must come back, so a switch port left at another MTU is
//!   found before pods' large packets vanish.
//!
//! Every probe stops at one budget, [`BUDGET`] or the question time if
//! shorter. A peer that is this node's own address is left out, so one
//! list of every node can be shared by all of them. ICMP needs a ping or
//! raw socket; without either the check says `error` unless it already
//! found a failure.

mod icmp;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use async_trait::async_trait;
use futures_util::future::join_all;
use tokio::time::Instant;

use super::{Check, Finding, Inputs, fail, pass, skip};
use crate::config::values::{Peer, PeerRole};
use icmp::{Echoes, Pinger};

/// How long any peer probe may wait, inside verify's own deadline.
pub const BUDGET: Duration = Duration::from_secs(2);
const ECHOES: u16 = 10;
const ECHO_INTERVAL: Duration = Duration::from_millis(10);
/// ping's default: 56 bytes of data, 84 on the wire with the IPv4 header.
const ECHO_SIZE: usize = 84;
const MAX_RTT: Duration = Duration::from_millis(100);
const MTU_TRIES: u16 = 3;
const STANDARD_MTU: u32 = 1500;

pub struct Peers;

#[async_trait]
impl Check for Peers {
    fn name(&self) -> &'static str {
        "peers"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let Some(k) = &i.config.kubernetes else { return Ok(skip("no kubernetes section")) };
        if k.peers.is_empty() {
            return Ok(skip("no kubernetes.peers configured"));
        }
        let own = i.node.ips();
        let others: Vec<&Peer> = k.peers.iter().filter(|p| !own.contains(&p.address)).collect();
        if others.is_empty() {
            return Ok(skip("kubernetes.peers holds only this node's own address"));
        }
        let budget = BUDGET.min(i.query_timeout);
        let until = Instant::now() + budget;
        let found = join_all(others.iter().map(|p| probe(i, p, budget, until))).await;
        judge(&found)
    }
}

/// What one peer's probes found.
struct Found {
    peer: Peer,
    ports: Vec<(u16, Port)>,
    /// Control-plane peers: the echo series, or why it could not run.
    echoes: Option<Result<Echoes, String>>,
    mtu: Mtu,
    /// The MAC that answered ARP, when a port got no answer.
    arp: Option<String>,
}

enum Port {
    Open,
    /// RST: the host is there, nothing listens yet.
    Refused,
    Unreachable(String),
    NoAnswer(Duration),
}

enum Mtu {
    Standard,
    /// The interface toward the peer, and the echo that had to fit it.
    Probed {
        mtu: u32,
        interface: String,
        echoes: Echoes,
    },
    /// The kernel already sends smaller packets than the interface's MTU
    /// (a route's `mtu`, or a path MTU learned from a router).
    Lower {
        mtu: u32,
        interface: String,
        path: u32,
    },
    CouldNotRun(String),
}

async fn probe(i: &Inputs<'_>, p: &Peer, budget: Duration, until: Instant) -> Found {
    let ports = join_all(p.role.ports().iter().map(|&port| async move {
        let addr = SocketAddr::new(p.address, port);
        let state = match tokio::time::timeout_at(until, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Port::Open,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Port::Refused,
            Ok(Err(e)) => Port::Unreachable(e.to_string().split(" (os error").next().unwrap_or_default().to_owned()),
            Err(_) => Port::NoAnswer(budget),
        };
        (port, state)
    }));
    let echoes = async {
        if p.role != PeerRole::ControlPlane {
            return None;
        }
        let series = async { Pinger::open(p.address)?.echoes(ECHOES, ECHO_SIZE, ECHO_INTERVAL, until).await };
        Some(series.await.map_err(|e| format!("{e:#}")))
    };
    let (ports, echoes, mtu) = tokio::join!(ports, echoes, mtu(i, p.address, until));
    let arp = ports
        .iter()
        .any(|(_, s)| matches!(s, Port::Unreachable(_) | Port::NoAnswer(_)))
        .then(|| i.root.read_string_opt("/proc/net/arp").ok().flatten())
        .flatten()
        .and_then(|table| super::vip::complete_entry(&table, p.address));
    Found { peer: *p, ports, echoes, mtu, arp }
}

async fn mtu(i: &Inputs<'_>, peer: IpAddr, until: Instant) -> Mtu {
    let toward = match toward(i, peer) {
        Ok(t) => t,
        Err(e) => return Mtu::CouldNotRun(format!("{e:#}")),
    };
    let (interface, mtu, path) = toward;
    if mtu == STANDARD_MTU {
        return Mtu::Standard;
    }
    if let Some(path) = path.filter(|&p| p < mtu) {
        return Mtu::Lower { mtu, interface, path };
    }
    let size = usize::try_from(mtu).unwrap_or(usize::MAX);
    match async { Pinger::open(peer)?.echoes(MTU_TRIES, size, ECHO_INTERVAL, until).await }.await {
        Ok(echoes) => Mtu::Probed { mtu, interface, echoes },
        Err(e) => Mtu::CouldNotRun(format!("{e:#}")),
    }
}

/// The interface the kernel sends to `peer` from, its MTU, and on IPv4
/// the kernel's own MTU toward the peer (`IP_MTU` of a connected socket).
fn toward(i: &Inputs<'_>, peer: IpAddr) -> Result<(String, u32, Option<u32>)> {
    let any: IpAddr = if peer.is_ipv4() { [0u8; 4].into() } else { [0u16; 8].into() };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(any, 0)).context("opening a UDP socket")?;
    socket.connect(SocketAddr::new(peer, 9)).with_context(|| format!("finding the route to {peer}"))?;
    let source = socket.local_addr()?.ip();
    let a = i.node.addresses.iter().find(|a| a.net.addr() == source);
    let interface = a.map(|a| a.interface.clone()).ok_or_else(|| anyhow!("no interface holds {source}"))?;
    let file = format!("/sys/class/net/{interface}/mtu");
    let mtu = i.root.read_string_opt(&file)?.with_context(|| format!("{file} does not exist"))?;
    let mtu = mtu.trim().parse().with_context(|| format!("{file} holds {:?}", mtu.trim()))?;
    let path = peer.is_ipv4().then(|| nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::IpMtu));
    Ok((interface, mtu, path.and_then(Result::ok).and_then(|p| u32::try_from(p).ok())))
}

fn judge(found: &[Found]) -> Result<Finding> {
    let mut bad = Vec::new();
    let mut good = Vec::new();
    let mut blind = Vec::new();
    for f in found {
        let (line, failed, could_not) = describe(f);
        if failed {
            bad.push(line);
        } else if let Some(why) = could_not {
            blind.push(why);
        } else {
            good.push(line);
        }
    }
    if !bad.is_empty() {
        let also = if good.is_empty() { String::new() } else { format!(" (fine: {})", good.join("; ")) };
        return Ok(fail(format!("{}{also}", bad.join("; "))));
    }
    if !blind.is_empty() {
        return Err(anyhow!("{}", blind.join("; ")));
    }
    Ok(pass(good.join("; ")))
}

/// One peer's line, whether it failed, and what could not be asked.
fn describe(f: &Found) -> (String, bool, Option<String>) {
    let mut failed = false;
    let mut could_not = Vec::new();
    let mut line = format!("{} ({}): tcp", f.peer.address, f.peer.role.as_str());
    for (n, (port, state)) in f.ports.iter().enumerate() {
        let sep = if n == 0 { " " } else { ", " };
        let said = match state {
            Port::Open => "open".to_owned(),
            Port::Refused => "refused (reachable)".to_owned(),
            Port::Unreachable(e) => format!("unreachable: {e}"),
            Port::NoAnswer(d) => format!("no answer within {}", humantime::format_duration(*d)),
        };
        failed |= matches!(state, Port::Unreachable(_) | Port::NoAnswer(_));
        let _ = write!(line, "{sep}{port} {said}");
    }
    if let Some(mac) = &f.arp {
        let _ = write!(line, " (answers ARP as {mac}: something drops its packets)");
    }
    match &f.echoes {
        None => {}
        Some(Err(e)) => {
            let _ = write!(line, ", ICMP could not run: {e}");
            could_not.push(format!("ICMP to {}: {e}", f.peer.address));
        }
        Some(Ok(e)) => {
            let (lost, slowest) = (e.lost(), e.answered().max());
            let _ = write!(line, ", {lost}/{} echoes lost", e.rtts.len());
            if let Some(max) = slowest {
                let _ = write!(line, ", rtt max {}", ms(max));
                if max >= MAX_RTT {
                    let _ = write!(line, " (over {})", ms(MAX_RTT));
                    failed = true;
                }
            }
            if let Some(err) = e.error.as_ref().filter(|_| lost > 0) {
                let _ = write!(line, " ({err})");
            }
            failed |= lost > 0;
        }
    }
    match &f.mtu {
        Mtu::Standard => line.push_str(", MTU 1500"),
        Mtu::Probed { mtu, interface, echoes } => {
            let sent = format!("a {mtu}-byte echo with DF set (MTU {mtu} on {interface})");
            if echoes.lost() < echoes.rtts.len() {
                let _ = write!(line, ", {sent} came back");
            } else {
                let why = echoes.error.as_deref().map_or_else(String::new, |e| format!(": {e}"));
                let _ = write!(line, ", {sent} got no answer{why}: the path carries smaller packets");
                failed = true;
            }
        }
        Mtu::Lower { mtu, interface, path } => {
            let _ = write!(line, ", the kernel's MTU toward it is {path}, below {interface}'s {mtu}");
            failed = true;
        }
        Mtu::CouldNotRun(e) => {
            let _ = write!(line, ", MTU could not be probed: {e}");
            could_not.push(format!("MTU toward {}: {e}", f.peer.address));
        }
    }
    let could_not = (!could_not.is_empty()).then(|| could_not.join("; "));
    (line, failed, could_not)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests;
