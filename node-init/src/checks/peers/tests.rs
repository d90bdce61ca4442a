//! The verdict on what the probes found; the probes themselves run against
//! real namespaces in the tests crate (`verify_peers`).

use super::*;

fn cp(addr: &str) -> Peer {
    Peer { address: addr.parse().unwrap(), role: PeerRole::ControlPlane }
}

fn echoes(rtts_ms: &[Option<u64>]) -> Echoes {
    Echoes { rtts: rtts_ms.iter().map(|r| r.map(Duration::from_millis)).collect(), error: None }
}

fn healthy(addr: &str) -> Found {
    Found {
        peer: cp(addr),
        ports: vec![(6443, Port::Open), (2379, Port::Refused), (2380, Port::Refused), (10250, Port::Refused)],
        echoes: Some(Ok(echoes(&[Some(1); 10]))),
        mtu: Mtu::Standard,
        arp: None,
    }
}

#[test]
fn refused_ports_are_reachable_and_every_port_is_named() {
    let f = judge(&[healthy("10.0.0.11")]).unwrap();
    assert_eq!(f.status, super::super::Status::Pass, "{}", f.reason);
    assert_eq!(
        f.reason,
        "10.0.0.11 (control-plane): tcp 6443 open, 2379 refused (reachable), 2380 refused (reachable), 10250 refused \
         (reachable), 0/10 echoes lost, rtt max 1.0 ms, MTU 1500"
    );
}

#[test]
fn no_answer_loss_slowness_and_a_lost_jumbo_echo_each_fail_the_peer() {
    let mut silent = healthy("10.0.0.12");
    silent.ports[1].1 = Port::NoAnswer(Duration::from_secs(2));
    silent.arp = Some("52:54:00:12:34:56 on eth0".into());
    let mut lossy = healthy("10.0.0.13");
    lossy.echoes = Some(Ok(echoes(&[Some(1), None, Some(1), None, Some(1), Some(1), Some(1), Some(1), Some(1), None])));
    let mut slow = healthy("10.0.0.14");
    slow.echoes = Some(Ok(echoes(&[Some(150); 10])));
    let mut jumbo = healthy("10.0.0.15");
    jumbo.mtu = Mtu::Probed { mtu: 9000, interface: "eth1".into(), echoes: echoes(&[None, None, None]) };
    for (f, said) in [
        (silent, "2379 no answer within 2s, 2380 refused (reachable), 10250 refused (reachable) (answers ARP as 52:"),
        (lossy, "3/10 echoes lost"),
        (slow, "rtt max 150.0 ms (over 100.0 ms)"),
        (jumbo, "a 9000-byte echo with DF set (MTU 9000 on eth1) got no answer: the path carries smaller packets"),
    ] {
        let v = judge(&[f, healthy("10.0.0.11")]).unwrap();
        assert_eq!(v.status, super::super::Status::Fail, "{}", v.reason);
        assert!(v.reason.contains(said), "{}", v.reason);
        assert!(v.reason.ends_with("(fine: 10.0.0.11 (control-plane): tcp 6443 open, 2379 refused (reachable), 2380 refused (reachable), 10250 refused (reachable), 0/10 echoes lost, rtt max 1.0 ms, MTU 1500)"), "{}", v.reason);
    }
}

#[test]
fn icmp_that_cannot_run_is_an_error_unless_something_already_failed() {
    let mut blind = healthy("10.0.0.11");
    blind.echoes = Some(Err("opening an ICMP socket: refused".into()));
    let e = judge(&[blind]).unwrap_err().to_string();
    assert_eq!(e, "ICMP to 10.0.0.11: opening an ICMP socket: refused");

    let mut blind = healthy("10.0.0.11");
    blind.echoes = Some(Err("opening an ICMP socket: refused".into()));
    blind.ports[0].1 = Port::Unreachable("No route to host".into());
    let v = judge(&[blind]).unwrap();
    assert_eq!(v.status, super::super::Status::Fail);
    assert!(v.reason.contains("6443 unreachable: No route to host") && v.reason.contains("ICMP could not run"));
}

#[test]
fn a_worker_peer_is_asked_on_the_kubelet_port_only_and_without_echoes() {
    let f = Found {
        peer: Peer { address: "10.0.0.21".parse().unwrap(), role: PeerRole::Worker },
        ports: vec![(10250, Port::Refused)],
        echoes: None,
        mtu: Mtu::Lower { mtu: 9000, interface: "eth1".into(), path: 1500 },
        arp: None,
    };
    let v = judge(&[f]).unwrap();
    assert_eq!(v.status, super::super::Status::Fail);
    assert_eq!(
        v.reason,
        "10.0.0.21 (worker): tcp 10250 refused (reachable), the kernel's MTU toward it is 1500, below eth1's 9000"
    );
}
