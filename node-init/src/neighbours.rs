//! The kernel's IPv6 neighbour table, read over rtnetlink (an
//! `RTM_GETNEIGH` dump on a `NETLINK_ROUTE` socket): what `ip -6 neigh`
//! shows. IPv4 has `/proc/net/arp`; IPv6 has no such file, so this is how
//! the `vip` check sees whether the kernel's own neighbour solicitation
//! was answered. No privilege is needed to read it.
//!
//! The request and the parser are plain bytes, so the parser is tested on
//! messages built by hand.

use std::io::Read as _;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const AF_INET6: u8 = 10;
const NETLINK_ROUTE: i32 = 0;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NLMSG_HDR: usize = 16;
const NDMSG: usize = 12;

/// `NUD_*` states in which the entry's link-layer address was answered
/// for (or set by hand) and not yet given up on.
const NUD_ANSWERED: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;

/// One entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub ifindex: i32,
    /// The `NUD_*` state bits.
    pub state: u16,
    pub lladdr: Option<Vec<u8>>,
}

impl Neighbour {
    /// The MAC of whoever answered for this address, if anyone did.
    pub fn owner(&self) -> Option<String> {
        let mac = self.lladdr.as_ref().filter(|m| !m.is_empty() && m.iter().any(|b| *b != 0))?;
        (self.state & NUD_ANSWERED != 0).then(|| mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
    }
}

/// The IPv6 neighbour table of this network namespace.
pub fn ipv6() -> Result<Vec<Neighbour>> {
    let sock = Socket::new(Domain::from(AF_NETLINK), Type::RAW, Some(Protocol::from(NETLINK_ROUTE)))
        .context("opening a netlink socket")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.send(&dump_request(AF_INET6, 1)).context("asking the kernel for its neighbour table")?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&sock).read(&mut buf).context("reading the kernel's neighbour table")?;
        if parse(&buf[..n], &mut out)? {
            return Ok(out);
        }
    }
}

/// An `RTM_GETNEIGH` dump request for `family`.
fn dump_request(family: u8, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDR + NDMSG);
    m.extend(((NLMSG_HDR + NDMSG) as u32).to_ne_bytes());
    m.extend(RTM_GETNEIGH.to_ne_bytes());
    m.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend(seq.to_ne_bytes());
    m.extend(0u32.to_ne_bytes());
    m.extend([family, 0, 0, 0]);
    m.extend([0u8; 8]);
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Adds the entries of one datagram to `out`; true once the dump is done.
fn parse(buf: &[u8], out: &mut Vec<Neighbour>) -> Result<bool> {
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let len = u32_at(buf, at).unwrap_or(0) as usize;
        let kind = u16_at(buf, at + 4).unwrap_or(0);
        if len < NLMSG_HDR || at + len > buf.len() {
            bail!("a truncated netlink message");
        }
        let msg = &buf[at..at + len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(msg, NLMSG_HDR).map_or(0, |e| (e as i32).wrapping_neg());
                if errno != 0 {
                    bail!("the kernel refused the neighbour dump: {}", std::io::Error::from_raw_os_error(errno));
                }
            }
            RTM_NEWNEIGH => out.extend(neighbour(&msg[NLMSG_HDR..])),
            _ => {}
        }
        at += align(len);
    }
    Ok(false)
}

/// One `ndmsg` and its attributes.
fn neighbour(m: &[u8]) -> Option<Neighbour> {
    if m.len() < NDMSG || m[0] != AF_INET6 {
        return None;
    }
    let ifindex = u32_at(m, 4)? as i32;
    let state = u16_at(m, 8)?;
    let (mut ip, mut lladdr) = (None, None);
    let mut at = NDMSG;
    while at + 4 <= m.len() {
        let len = u16_at(m, at)? as usize;
        let kind = u16_at(m, at + 2)?;
        if len < 4 || at + len > m.len() {
            break;
        }
        let data = &m[at + 4..at + len];
        match kind {
            NDA_DST => ip = <[u8; 16]>::try_from(data).ok().map(|b| IpAddr::V6(Ipv6Addr::from(b))),
            NDA_LLADDR => lladdr = Some(data.to_vec()),
            _ => {}
        }
        at += align(len);
    }
    Some(Neighbour { ip: ip?, ifindex, state, lladdr })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: &str, state: u16, mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut body = vec![AF_INET6, 0, 0, 0];
        body.extend(7u32.to_ne_bytes());
        body.extend(state.to_ne_bytes());
        body.extend([0, 1]);
        body.extend(20u16.to_ne_bytes());
        body.extend(NDA_DST.to_ne_bytes());
        body.extend(ip.parse::<Ipv6Addr>().unwrap().octets());
        if let Some(mac) = mac {
            body.extend(10u16.to_ne_bytes());
            body.extend(NDA_LLADDR.to_ne_bytes());
            body.extend(mac);
            body.extend([0, 0]);
        }
        let mut m = ((NLMSG_HDR + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend(RTM_NEWNEIGH.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn a_dump_yields_each_entry_and_its_answer_if_any() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let mut buf = entry("fd00::5", 0x01, None);
        buf.extend(entry("fd00::6", 0x02, Some(mac)));
        buf.extend(entry("fd00::7", 0x20, Some([0; 6])));
        let mut out = Vec::new();
        assert!(!parse(&buf, &mut out).unwrap());
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].ip, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!((out[0].owner(), out[0].ifindex), (None, 7), "incomplete: asked, not answered");
        assert_eq!(out[1].owner().as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(out[2].owner(), None, "failed");
        let mut done = 20u32.to_ne_bytes().to_vec();
        done.extend(NLMSG_DONE.to_ne_bytes());
        done.extend([0u8; 14]);
        assert!(parse(&done, &mut out).unwrap());
    }

    #[test]
    fn the_request_is_a_dump_of_one_family() {
        let r = dump_request(AF_INET6, 9);
        assert_eq!(r.len(), 28);
        assert_eq!(u16_at(&r, 4), Some(RTM_GETNEIGH));
        assert_eq!(u16_at(&r, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(r[16], AF_INET6);
    }

    #[test]
    fn this_namespace_table_can_be_read() {
        ipv6().unwrap();
    }
}
