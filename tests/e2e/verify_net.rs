//! `node-init verify` inside a network namespace the test builds: the node
//! at 10.201.N.2, the MAAS DNS (hickory-server) on the host side at
//! 10.201.N.1:53, real routes, a VIP that is free or held, an API port that
//! is open or closed; and egress through a CONNECT proxy on the host side to a
//! TLS server whose CA is the proxy CA.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use node_init_tests::dns::Mode;
use node_init_tests::net::{Background, ProxyMode, connect_proxy, tls_server};
use node_init_tests::preflight::{FQDN, Preflight, outcome};
use node_init_tests::*;

fn join(vip: Ipv4Addr) -> String {
    format!(
        "kubernetes:\n  role: worker\n  endpoint: {vip}:6443\n  token: abcdef.0123456789abcdef\n  \
         ca_cert_hashes: [\"sha256:{}\"]\n",
        "0".repeat(64)
    )
}

fn init(w: &Preflight, vip: Ipv4Addr) -> String {
    init_at(w, &format!("{vip}:6443"))
}

fn init_at(w: &Preflight, endpoint: &str) -> String {
    let (ca, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, true);
    format!(
        "kubernetes:\n  role: init\n  endpoint: \"{endpoint}\"\n  token: abcdef.0123456789abcdef\n  \
         certificate_key: \"{}\"\n  vip: {{interface: {}}}\n  ca:\n    cert: |\n{}    key: |\n{}",
        "a".repeat(64),
        w.ns.node_if,
        yaml_block(&ca, 6),
        yaml_block(&key.serialize_pem(), 6)
    )
}

#[test]
fn dns_checks_pass_against_a_zone_that_knows_the_node() {
    let w = Preflight::knowing_the_node();
    w.dns.address("api.example.test", "10.50.0.1".parse().unwrap());
    let (_, v) = w.verify_node("  require: [api.example.test]\n", "5s");
    for name in ["dns_forward", "dns_reverse", "dns_zone", "dns_delegation", "dns_require"] {
        assert_eq!(outcome(&v, name).0, "pass", "{name}: {}", outcome(&v, name).1);
    }
    assert!(outcome(&v, "dns_forward").1.contains(&w.ns.node_ip.to_string()));
    assert!(outcome(&v, "dns_zone").1.contains("ns1.maas"));
}

#[test]
fn a_missing_required_name_is_named_with_its_server() {
    let w = Preflight::knowing_the_node();
    let (code, v) = w.verify_node("  require: [missing.example.test]\n", "5s");
    assert_eq!(code, Some(1));
    let (s, r) = outcome(&v, "dns_require");
    assert_eq!(s, "fail");
    assert_eq!(r, format!("missing.example.test via {}:53: NXDOMAIN", w.ns.host_ip));
}

#[test]
fn a_wrong_address_fails_forward_and_reverse() {
    let w = Preflight::knowing_the_node();
    w.dns.address("node2.maas", "10.9.9.9".parse().unwrap());
    let (_, v) = w.verify(&format!("hostname: node2.maas\ndns:\n  nameservers: [\"{}\"]\n", w.ns.host_ip), &[]);
    let (s, r) = outcome(&v, "dns_forward");
    assert_eq!(s, "fail");
    assert!(r.contains("answered 10.9.9.9, none of which is this node's"), "{r}");
    let (s, r) = outcome(&v, "dns_reverse");
    assert_eq!(s, "fail");
    assert!(r.contains("no address of this node"), "{r}");
}

#[test]
fn a_dead_nameserver_costs_one_timeout_and_every_other_check_is_still_reported() {
    let w = Preflight::knowing_the_node();
    w.dns.mode(Mode::Silent);
    let started = Instant::now();
    let (code, v) = w.verify_node("  require: [api.example.test]\n", "2s");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "verify took {took:?}");
    assert_eq!(code, Some(1));
    for name in ["dns_forward", "dns_reverse", "dns_zone", "dns_require"] {
        let (s, r) = outcome(&v, name);
        assert_eq!(s, "fail", "{name}");
        assert!(r.contains("no answer within") || r.contains("timed out"), "{name}: {r}");
    }
    for name in ["cpus", "memory", "swap", "cidr_overlap"] {
        assert_ne!(outcome(&v, name).1, "", "{name} was not reported");
    }
    assert!(!outcome(&v, "cidr_overlap").1.contains("timed out"));
}

#[test]
fn overlap_names_the_interface_and_prefix() {
    let w = Preflight::knowing_the_node();
    w.ns.ip(&["route", "add", "172.30.0.0/16", "via", &w.ns.host_ip.to_string()]);
    let (_, v) = w.verify_node(&format!("{}  pod_cidr: 10.201.0.0/16\n", join(w.vip(100))), "5s");
    let (s, r) = outcome(&v, "cidr_overlap");
    assert_eq!(s, "fail");
    let net = format!("{}/24", Ipv4Addr::from(u32::from(w.ns.node_ip) & 0xffff_ff00));
    assert_eq!(r, format!("pod CIDR 10.201.0.0/16 overlaps address {net} on {}", w.ns.node_if));
    let (_, v) = w.verify_node(&format!("{}  service_cidr: 172.30.0.0/20\n", join(w.vip(100))), "5s");
    let (s, r) = outcome(&v, "cidr_overlap");
    assert_eq!(s, "fail");
    assert_eq!(r, format!("service CIDR 172.30.0.0/20 overlaps route 172.30.0.0/16 on {}", w.ns.node_if));
    let (_, v) = w.verify_node(&join(w.vip(100)), "5s");
    assert_eq!(outcome(&v, "cidr_overlap").0, "pass");
}

#[test]
fn the_vip_before_init_must_be_free_by_arp() {
    let w = Preflight::knowing_the_node();
    let (_, v) = w.verify_node(&init(&w, w.vip(100)), "5s");
    let (s, r) = outcome(&v, "vip");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("is free"), "{r}");

    w.ns.host_address(w.vip(101));
    let (_, v) = w.verify_node(&init(&w, w.vip(101)), "5s");
    let (s, r) = outcome(&v, "vip");
    assert_eq!(s, "fail");
    assert!(r.contains("is already held") && r.contains("answers ARP"), "{r}");

    let wrong_if = init(&w, w.vip(100)).replace(&format!("interface: {}", w.ns.node_if), "interface: eth9");
    let (_, v) = w.verify_node(&wrong_if, "5s");
    assert!(outcome(&v, "vip").1.contains("but kubernetes.vip.interface is eth9"), "{}", outcome(&v, "vip").1);

    let (_, v) = w.verify_node(&init(&w, w.ns.node_ip), "5s");
    assert!(outcome(&v, "vip").1.contains("already an address of this node"));
    let (_, v) = w.verify_node(&init(&w, "10.77.0.1".parse().unwrap()), "5s");
    assert!(outcome(&v, "vip").1.contains("is in no local subnet"));
}

#[test]
fn an_ipv6_vip_before_init_is_asked_by_neighbour_solicitation() {
    let w = Preflight::knowing_the_node();
    w.ns.with_ipv6();
    let (_, v) = w.verify_node(&init_at(&w, &format!("[{}]:6443", w.ns.ipv6(0x100))), "5s");
    let (s, r) = outcome(&v, "vip");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("is free: no answer to neighbour solicitation"), "{r}");

    let held = w.ns.ipv6(0x101);
    w.ns.host_address_v6(held);
    let (_, v) = w.verify_node(&init_at(&w, &format!("[{held}]:6443")), "5s");
    let (s, r) = outcome(&v, "vip");
    assert_eq!(s, "fail", "{r}");
    assert!(r.contains("is already held") && r.contains("answers neighbour solicitation"), "{r}");
    assert!(r.contains(&w.ns.host_mac()), "not the holder's MAC ({}): {r}", w.ns.host_mac());

    // Without a route to the VIP the kernel cannot ask: that is no verdict.
    w.ns.ip(&["-6", "route", "del", &format!("{}/64", w.ns.ipv6_prefix()), "dev", &w.ns.node_if]);
    let (_, v) = w.verify_node(&init_at(&w, &format!("[{}]:6443", w.ns.ipv6(0x100))), "5s");
    let (s, r) = outcome(&v, "vip");
    assert_eq!(s, "error", "{r}");
    assert!(r.contains("neighbour solicitation") && r.contains("cannot send"), "{r}");
}

#[test]
fn the_vip_before_a_join_must_accept_tcp() {
    let w = Preflight::knowing_the_node();
    let (_, v) = w.verify_node(&join(w.vip(103)), "3s");
    let (s, r) = outcome(&v, "vip");
    assert_eq!(s, "fail");
    assert!(r.contains("does not accept TCP") || r.contains("no TCP answer"), "{r}");

    w.ns.host_address(w.vip(102));
    let _api = std::net::TcpListener::bind((w.vip(102), 6443)).unwrap();
    let (_, v) = w.verify_node(&join(w.vip(102)), "3s");
    let (s, r) = outcome(&v, "vip");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("accepts TCP"));
}

#[test]
fn egress_goes_through_the_proxy_and_names_the_failing_step() {
    let w = Preflight::knowing_the_node();
    let bg = Background::new();
    let side = |port: u16| SocketAddr::new(IpAddr::V4(w.ns.host_ip), port);
    let (tls, ca) = tls_server(&bg, side(0), &["api.example.test"]);
    let (_, other_ca) = tls_server(&bg, side(0), &["api.example.test"]);
    let allow = connect_proxy(&bg, side(0), ProxyMode::Allow(tls));
    let auth = connect_proxy(&bg, side(0), ProxyMode::Auth { user_pass: "u:p@ss".into(), upstream: tls });
    let forbid = connect_proxy(&bg, side(0), ProxyMode::Forbid);
    let closed = std::net::TcpListener::bind(side(0)).unwrap().local_addr().unwrap();
    let run = |proxy: &str, ca: &str| {
        let config = format!(
            "hostname: {FQDN}\ndns:\n  nameservers: [\"{}\"]\n  require: [api.example.test]\nproxy:\n  https: {proxy}\n  ca_cert: |\n{}",
            w.ns.host_ip,
            yaml_block(ca, 4)
        );
        let out = w.output(&config, &["--timeout", "5s"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = outcome(&v, "egress");
        let p = outcome(&v, "proxy");
        assert!(!text(&out.stderr).contains("p@ss") && !text(&out.stdout).contains("p%40ss"), "a password leaked");
        ((e.0.to_owned(), e.1.to_owned()), (p.0.to_owned(), p.1.to_owned()))
    };
    let (e, p) = run(&format!("http://{allow}"), &ca);
    assert_eq!(e.0, "pass", "{}", e.1);
    assert!(e.1.contains("verified"), "{}", e.1);
    assert_eq!(p.0, "pass", "{}", p.1);

    let (e, _) = run(&format!("http://u:p%40ss@{auth}"), &ca);
    assert_eq!(e.0, "pass", "{}", e.1);
    let (e, _) = run(&format!("http://{auth}"), &ca);
    assert!(e.1.contains("407"), "{}", e.1);
    let (e, _) = run(&format!("http://u:wrong@{auth}"), &ca);
    assert!(e.1.contains("rejected the credentials"), "{}", e.1);
    let (e, _) = run(&format!("http://{forbid}"), &ca);
    assert!(e.1.contains("forbids CONNECT to api.example.test:443 (HTTP/1.1 403 Forbidden)"), "{}", e.1);
    let (e, p) = run(&format!("http://{closed}"), &ca);
    assert!(e.1.contains("refused"), "{}", e.1);
    assert_eq!(p.0, "fail");
    let (e, _) = run(&format!("http://{allow}"), &other_ca);
    assert!(e.1.contains("TLS untrusted"), "{}", e.1);
}
