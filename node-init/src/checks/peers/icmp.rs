//! ICMP echo to one peer, through `socket2`: an unprivileged ping socket
//! (`SOCK_DGRAM`, allowed when `net.ipv4.ping_group_range` holds the
//! process's group, which a new network namespace's default does not),
//! else a raw one (root, CAP_NET_RAW). The socket is connected to the
//! peer, so the kernel hands it only that peer's packets; a raw socket
//! also sees other pingers' replies, told apart by the echo identifier.
//!
//! Don't-fragment: a socket's default path-MTU mode (`IP_PMTUDISC_WANT`)
//! sets DF on every datagram that fits the MTU the kernel knows toward the
//! peer, so an echo of exactly that size leaves with DF set and is never
//! fragmented on the way; the caller compares that MTU with the
//! interface's first.
//!
//! The socket is driven as a tokio `UdpSocket`: its `send` and `recv` are
//! the plain system calls, which any datagram or raw socket answers, and
//! registering it with the reactor that way needs no unsafe code.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, anyhow};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::time::Instant;

const V4_HEADER: usize = 20;
const V6_HEADER: usize = 40;
const ECHO_HEADER: usize = 8;

pub struct Pinger {
    socket: tokio::net::UdpSocket,
    peer: IpAddr,
    /// A raw socket: it sees every pinger's replies from the peer, and on
    /// IPv4 the IP header too.
    raw: bool,
    id: u16,
}

/// What a series of echoes got back.
#[derive(Debug, Default)]
pub struct Echoes {
    /// Each echo's round trip, `None` when no reply came in time.
    pub rtts: Vec<Option<Duration>>,
    /// The last error the kernel reported for the peer (no route, a
    /// packet over the MTU), if any.
    pub error: Option<String>,
}

impl Echoes {
    pub fn lost(&self) -> usize {
        self.rtts.iter().filter(|r| r.is_none()).count()
    }

    pub fn answered(&self) -> impl Iterator<Item = Duration> + '_ {
        self.rtts.iter().flatten().copied()
    }
}

impl Pinger {
    /// A socket for echoes to `peer`, or why none could be opened.
    pub fn open(peer: IpAddr) -> Result<Self> {
        let (domain, proto) = match peer {
            IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
            IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
        };
        let (socket, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => (s, false),
            Err(dgram) => match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => (s, true),
                Err(raw) => {
                    return Err(anyhow!(
                        "opening an ICMP socket: a ping socket was refused ({dgram}: net.ipv4.ping_group_range does \
                         not hold this process's group) and a raw one too ({raw}: it needs CAP_NET_RAW); run verify \
                         as root"
                    ));
                }
            },
        };
        socket.set_nonblocking(true)?;
        socket.connect(&SockAddr::from(SocketAddr::new(peer, 0)))?;
        Ok(Self { socket: tokio::net::UdpSocket::from_std(socket.into())?, peer, raw, id: fastrand::u16(..) })
    }

    /// Sends `count` echoes of `size` bytes (IP header included) every
    /// `interval` and keeps the replies that come before `until`.
    pub async fn echoes(&self, count: u16, size: usize, interval: Duration, until: Instant) -> Result<Echoes> {
        let count = usize::from(count);
        let mut sent: Vec<Option<Instant>> = vec![None; count];
        let mut got = Echoes { rtts: vec![None; count], error: None };
        let (mut next, mut next_at) = (0usize, Instant::now());
        let mut buf = vec![0u8; size.max(128) + V6_HEADER];
        while got.rtts.iter().any(Option::is_none) {
            tokio::select! {
                _ = tokio::time::sleep_until(next_at), if next < count => {
                    sent[next] = Some(Instant::now());
                    if let Err(e) = self.send(next as u16, size) {
                        got.error = Some(said(&e));
                    }
                    next += 1;
                    next_at += interval;
                }
                r = self.recv(&mut buf) => match r {
                    Ok(Some(seq)) => {
                        let seq = usize::from(seq);
                        if let (Some(Some(at)), Some(slot @ None)) = (sent.get(seq), got.rtts.get_mut(seq)) {
                            *slot = Some(at.elapsed());
                        }
                    }
                    Ok(None) => {}
                    Err(e) if quiet(&e) => got.error = Some(said(&e)),
                    Err(e) => return Err(anyhow!("reading echo replies from {}: {e}", self.peer)),
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        Ok(got)
    }

    fn send(&self, seq: u16, size: usize) -> io::Result<()> {
        let header = if self.peer.is_ipv4() { V4_HEADER } else { V6_HEADER };
        let packet = echo_request(self.peer.is_ipv4(), self.id, seq, size.saturating_sub(header + ECHO_HEADER));
        self.socket.try_send(&packet).map(drop)
    }

    /// The sequence number of one of our echo replies, `None` for any
    /// other packet.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<u16>> {
        let n = self.socket.recv(buf).await?;
        Ok(self.ours(&buf[..n]))
    }

    fn ours(&self, packet: &[u8]) -> Option<u16> {
        let icmp = if self.raw && self.peer.is_ipv4() {
            packet.get(usize::from(packet.first()? & 0x0f) * 4..)?
        } else {
            packet
        };
        let (kind, id, seq) = reply_fields(icmp)?;
        let want = if self.peer.is_ipv4() { 0 } else { 129 };
        // A ping socket's identifier is its port, which the kernel matched.
        (kind == want && (id == self.id || !self.raw)).then_some(seq)
    }
}

/// The kernel's word for a peer it cannot reach: a verdict, not an error.
fn quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable | io::ErrorKind::ConnectionRefused
    ) || e.raw_os_error() == Some(nix::libc::EMSGSIZE)
}

fn said(e: &io::Error) -> String {
    e.to_string().split(" (os error").next().unwrap_or_default().to_owned()
}

/// An echo request with `payload` bytes; the IPv4 checksum is ours (a
/// ping socket recomputes it), ICMPv6's is always the kernel's.
fn echo_request(v4: bool, id: u16, seq: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![if v4 { 8 } else { 128 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((0..payload).map(|i| (i % 251) as u8));
    if v4 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// RFC 1071: the ones' complement of the ones' complement sum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Type, identifier and sequence number of an ICMP message.
fn reply_fields(icmp: &[u8]) -> Option<(u8, u16, u16)> {
    let h = icmp.get(..ECHO_HEADER)?;
    Some((h[0], u16::from_be_bytes([h[4], h[5]]), u16::from_be_bytes([h[6], h[7]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_sums_to_zero_and_has_the_asked_size() {
        let p = echo_request(true, 0x1234, 7, 1472);
        assert_eq!(p.len(), 1480, "1500 - the 20-byte IPv4 header");
        assert_eq!((p[0], &p[4..8]), (8, &[0x12, 0x34, 0, 7][..]));
        assert_eq!(checksum(&p), 0, "a message with its checksum sums to zero");
        let odd = echo_request(true, 1, 1, 3);
        assert_eq!(checksum(&odd), 0);
        assert_eq!(echo_request(false, 1, 1, 0)[..4], [128, 0, 0, 0], "ICMPv6: the kernel sums");
    }

    #[test]
    fn reads_type_identifier_and_sequence() {
        assert_eq!(reply_fields(&[0, 0, 0xff, 0xff, 0x12, 0x34, 0, 9, 1, 2]), Some((0, 0x1234, 9)));
        assert_eq!(reply_fields(&[0, 0, 0]), None);
    }
}
