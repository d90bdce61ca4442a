//! The cluster's other nodes, for `verify`'s `peers` check: each one a
//! namespace of its own joined to the node's namespace by a veth pair on
//! a /24 of its own (link K: the node's end `pK` at 10.210.K.1, the peer's
//! end `pp` at 10.210.K.2). Nothing is routed beyond the link, so every
//! probe stays between the node and its peers. A peer listens on the
//! ports it is told to (python3's sockets, held open until dropped) or on
//! none; its link can have MTUs of its own on either end; it can answer
//! nothing at all, or answer echoes late or not every one.
//!
//! Late and lost echoes would be `tc netem`'s job, but this machine's
//! kernel has no `sch_netem` (nor modules to load it), so a peer that
//! should be slow or lossy has its kernel's echo replies turned off
//! (`icmp_echo_ignore_all`) and a responder of its own on a raw socket
//! that answers each echo after a delay, or leaves every Nth unanswered:
//! what the node sees is what a congested or lossy path shows ping.

use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use crate::net::Netns;

pub struct PeerNode {
    /// The namespace, `NODE-kK`.
    pub name: String,
    pub addr: Ipv4Addr,
    /// The node's end of the link, in the node's namespace.
    pub node_if: String,
    /// The listener and the echo responder, killed when dropped.
    children: Vec<Child>,
}

fn sh(argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl PeerNode {
    /// Peer K (1..=250) of the node in `node`, listening nowhere yet.
    pub fn new(node: &Netns, k: u8) -> Self {
        let peer = Self {
            name: format!("{}-k{k}", node.name),
            addr: Ipv4Addr::new(10, 210, k, 2),
            node_if: format!("p{k}"),
            children: Vec::new(),
        };
        sh(&["ip", "netns", "add", &peer.name]);
        node.ip(&["link", "add", &peer.node_if, "type", "veth", "peer", "name", "pp", "netns", &peer.name]);
        node.ip(&["addr", "add", &format!("10.210.{k}.1/24"), "dev", &peer.node_if]);
        node.ip(&["link", "set", &peer.node_if, "up"]);
        peer.ip(&["addr", "add", &format!("{}/24", peer.addr), "dev", "pp"]);
        peer.ip(&["link", "set", "pp", "up"]);
        peer.ip(&["link", "set", "lo", "up"]);
        peer
    }

    /// `ip -n PEER ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// Listens on `ports` (and accepts nothing: the kernel completes the
    /// handshake) until dropped; returns once every port is bound.
    pub fn listen(mut self, ports: &[u16]) -> Self {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let script = format!(
            "import socket, sys\nheld = []\nfor p in [{}]:\n    s = socket.socket()\n    \
             s.bind(('{}', p))\n    s.listen(16)\n    held.append(s)\nprint('ready', flush=True)\nsys.stdin.read()\n",
            ports.join(", "),
            self.addr
        );
        self.python(&script);
        self
    }

    /// Echo replies from a responder of the peer's own instead of its
    /// kernel: each sent `delay_ms` late, and none for every `drop_every`th
    /// sequence number (0: answer all).
    pub fn echoes(mut self, delay_ms: u64, drop_every: u16) -> Self {
        sh(&["ip", "netns", "exec", &self.name, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"]);
        self.python(&format!("{ECHO_RESPONDER}responder({delay_ms} / 1000, {drop_every})\n"));
        self
    }

    /// A host that answers nothing, not even ARP: powered off behind a
    /// live switch port.
    pub fn silent(self) -> Self {
        sh(&["ip", "netns", "exec", &self.name, "sysctl", "-qw", "net.ipv4.conf.pp.arp_ignore=8"]);
        self
    }

    /// Runs `script` in the peer's namespace until dropped; returns once
    /// it prints `ready`.
    fn python(&mut self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "/usr/bin/python3", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 in the peer's namespace");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("reading python3");
        assert_eq!(line.trim(), "ready", "the peer's python3 did not start");
        self.children.push(child);
    }

    /// The link's MTU on the node's end and on the peer's. A veth drops
    /// what is larger than its receiving end's MTU, as a switch port set
    /// to a smaller MTU does, silently.
    pub fn mtu(self, node: &Netns, node_end: u32, peer_end: u32) -> Self {
        node.ip(&["link", "set", &self.node_if, "mtu", &node_end.to_string()]);
        self.ip(&["link", "set", "pp", "mtu", &peer_end.to_string()]);
        self
    }
}

impl Drop for PeerNode {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Answers ICMP echo requests on a raw socket: the reply carries the
/// request's identifier, sequence and data, as a kernel's does.
const ECHO_RESPONDER: &str = r#"
import socket, struct, threading

def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def responder(delay, drop_every):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("ready", flush=True)
    while True:
        packet, (src, _) = s.recvfrom(65535)
        icmp = packet[(packet[0] & 15) * 4:]
        if len(icmp) < 8 or icmp[0] != 8:
            continue
        seq = struct.unpack("!H", icmp[6:8])[0]
        if drop_every and seq % drop_every == drop_every - 1:
            continue
        reply = b"\0\0\0\0" + icmp[4:]
        reply = reply[:2] + struct.pack("!H", checksum(reply)) + reply[4:]
        threading.Timer(delay, s.sendto, (reply, (src, 0))).start()
"#;
