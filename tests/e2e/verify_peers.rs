//! `node-init verify`'s `peers` check, the real binary in the node's
//! namespace against peers that are namespaces of their own: listening,
//! refusing (nothing listens yet: reachable), answering echoes late or
//! not all of them (this kernel has no netem: see `peers::PeerNode`),
//! behind a link whose far end takes smaller packets, or answering
//! nothing (no answer: a failure). The `error` case runs verify as a user
//! that may open neither a ping nor a raw socket.

use std::time::{Duration, Instant};

use node_init_tests::peers::PeerNode;
use node_init_tests::preflight::{Preflight, check, outcome};

const CONTROL_PLANE_PORTS: &[u16] = &[6443, 2379, 2380, 10250];

/// A worker node (no etcd measurement) with `peers` as written.
fn worker_with(peers: &str) -> String {
    format!(
        "kubernetes:\n  role: worker\n  endpoint: 10.0.0.1:6443\n  token: abcdef.0123456789abcdef\n  \
         ca_cert_hashes: [\"sha256:{}\"]\n  peers: {peers}\n",
        "0".repeat(64)
    )
}

/// The peers check's status, reason and duration in one verify run.
fn peers(w: &Preflight, config: &str) -> (String, String, Duration) {
    let started = Instant::now();
    let (_, v) = w.verify_node(config, "5s");
    eprintln!("verify took {:?}", started.elapsed());
    let (s, r) = outcome(&v, "peers");
    eprintln!("peers: {s}: {r}");
    let ms = check(&v, "peers")["duration_ms"].as_u64().unwrap();
    (s.to_owned(), r.to_owned(), Duration::from_millis(ms))
}

#[test]
fn peers_that_listen_or_refuse_pass_port_by_port_and_a_jumbo_link_carries_its_mtu() {
    let w = Preflight::knowing_the_node();
    let up = PeerNode::new(&w.ns, 1).listen(CONTROL_PLANE_PORTS);
    let not_yet = PeerNode::new(&w.ns, 2);
    let jumbo = PeerNode::new(&w.ns, 3).listen(&[10250]).mtu(&w.ns, 9000, 9000);
    // The node's own address in the shared list is left out.
    let list = format!("[{}, {}, {{address: {}, role: worker}}, {}]", up.addr, not_yet.addr, jumbo.addr, w.ns.node_ip);
    let (s, r, took) = peers(&w, &worker_with(&list));
    assert_eq!(s, "pass", "{r}");
    assert!(
        r.starts_with(&format!(
            "{} (control-plane): tcp 6443 open, 2379 open, 2380 open, 10250 open, 0/10 echoes lost, rtt max ",
            up.addr
        )),
        "{r}"
    );
    assert!(
        r.contains(&format!(
            "{} (control-plane): tcp 6443 refused (reachable), 2379 refused (reachable), 2380 refused (reachable), \
             10250 refused (reachable), 0/10 echoes lost",
            not_yet.addr
        )),
        "{r}"
    );
    assert!(
        r.ends_with(&format!(
            "{} (worker): tcp 10250 open, a 9000-byte echo with DF set (MTU 9000 on p3) came back",
            jumbo.addr
        )),
        "{r}"
    );
    assert!(!r.contains(&w.ns.node_ip.to_string()), "{r}");
    assert!(took < Duration::from_millis(800), "a healthy set of peers took {took:?}");

    let (s, r, _) = peers(&w, &worker_with("[]"));
    assert_eq!((s.as_str(), r.as_str()), ("skip", "no kubernetes.peers configured"));
    let (s, r, _) = peers(&w, &worker_with(&format!("[{}]", w.ns.node_ip)));
    assert_eq!((s.as_str(), r.as_str()), ("skip", "kubernetes.peers holds only this node's own address"));
}

#[test]
fn a_lossy_a_slow_a_narrow_and_a_blackholed_peer_each_fail_by_name_within_the_budget() {
    let w = Preflight::knowing_the_node();
    let lossy = PeerNode::new(&w.ns, 1).listen(CONTROL_PLANE_PORTS).echoes(0, 3);
    let slow = PeerNode::new(&w.ns, 2).listen(CONTROL_PLANE_PORTS).echoes(150, 0);
    // Jumbo frames on the node's end, 1400 on the far end: small packets
    // pass, an MTU-sized one vanishes.
    let narrow = PeerNode::new(&w.ns, 3).mtu(&w.ns, 9000, 1400);
    let black = PeerNode::new(&w.ns, 4).silent();
    let fine = PeerNode::new(&w.ns, 5);
    let list = format!("[{}, {}, {}, {}, {}]", lossy.addr, slow.addr, narrow.addr, black.addr, fine.addr);
    let (s, r, took) = peers(&w, &worker_with(&list));
    assert_eq!(s, "fail", "{r}");

    // Sequence numbers 2, 5 and 8 go unanswered.
    let lossy_line = format!(
        "{} (control-plane): tcp 6443 open, 2379 open, 2380 open, 10250 open, 3/10 echoes lost, rtt max ",
        lossy.addr
    );
    assert!(r.contains(&lossy_line), "{r}");

    // The echo is held 150 ms; a loaded machine adds to that, never takes
    // from it, so the reported maximum is at least 150 ms.
    let slow_line = format!(
        "{} (control-plane): tcp 6443 open, 2379 open, 2380 open, 10250 open, 0/10 echoes lost, rtt max ",
        slow.addr
    );
    let rtt: f64 = r
        .split_once(&slow_line)
        .and_then(|(_, rest)| rest.split_once(" ms (over 100.0 ms), MTU 1500"))
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or_else(|| panic!("no slow peer's rtt over the limit in {r}"));
    assert!((150.0..1000.0).contains(&rtt), "the slow peer's rtt max {rtt} ms: {r}");
    assert!(
        r.contains(&format!(
            "{} (control-plane): tcp 6443 refused (reachable), 2379 refused (reachable), 2380 refused (reachable), \
             10250 refused (reachable), 0/10 echoes lost",
            narrow.addr
        )) && r
            .contains("a 9000-byte echo with DF set (MTU 9000 on p3) got no answer: the path carries smaller packets"),
        "{r}"
    );
    assert!(
        r.contains(&format!(
            "{} (control-plane): tcp 6443 no answer within 2s, 2379 no answer within 2s, 2380 no answer within 2s, \
             10250 no answer within 2s, 10/10 echoes lost",
            black.addr
        )),
        "{r}"
    );
    assert!(r.contains(&format!("(fine: {} (control-plane): tcp 6443 refused (reachable)", fine.addr)), "{r}");
    // One budget for every peer: peer by peer, the blackholed and the narrow
    // one would each spend the whole 2 s.
    assert!(took < Duration::from_millis(3000), "the probes' 2 s budget, yet {took:?}");
}

#[test]
fn icmp_without_a_ping_or_raw_socket_is_an_error_and_a_ping_socket_is_enough() {
    let w = Preflight::knowing_the_node();
    let peer = PeerNode::new(&w.ns, 1).listen(CONTROL_PLANE_PORTS);
    // nobody must read the config the run gets.
    let perms = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(w.dir.path(), perms).unwrap();
    let config = format!(
        "hostname: node1.maas\ndns:\n  nameservers: [\"{}\"]\n{}",
        w.ns.host_ip,
        worker_with(&format!("[{}]", peer.addr))
    );
    let as_nobody = "exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$0\" \"$@\"";
    // A new namespace's net.ipv4.ping_group_range is "1 0": no group.
    let (_, v) = w.verify_after(as_nobody, &config, &["--timeout", "5s"]);
    let (s, r) = outcome(&v, "peers");
    assert_eq!(s, "error", "{r}");
    assert!(
        r.starts_with(&format!(
            "could not run: ICMP to {}: opening an ICMP socket: a ping socket was refused (Permission denied",
            peer.addr
        )) && r.contains("and a raw one too (Operation not permitted")
            && r.ends_with("run verify as root"),
        "{r}"
    );

    // The same user, once the namespace lets its group ping.
    let allow = format!("sysctl -qw net.ipv4.ping_group_range='65534 65534'\n{as_nobody}");
    let (_, v) = w.verify_after(&allow, &config, &["--timeout", "5s"]);
    let (s, r) = outcome(&v, "peers");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("10250 open, 0/10 echoes lost, rtt max "), "{r}");
}
