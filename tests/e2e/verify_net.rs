//! `node-init verify` inside a network namespace the test builds: the node
//! at 10.201.N.2, the MAAS DNS (hickory-server) on the host side at
//! 10.201.N.1:53, real routes, a VIP that is free or held, an API port that
//! is open or closed; and egress through a CONNECT proxy on the host side to a
//! TLS server whose CA is the proxy CA.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use node_init_tests::dns::{Mode, TestDns};
use node_init_tests::net::{Background, Netns, ProxyMode, connect_proxy, tls_server};
use node_init_tests::*;

const FQDN: &str = "node1.maas";

struct World {
    ns: Netns,
    dns: TestDns,
    dir: tempfile::TempDir,
}

impl World {
    /// The node's namespace, with a MAAS zone that knows it.
    fn new() -> Self {
        let ns = Netns::new();
        let dns = TestDns::start_on(SocketAddr::new(IpAddr::V4(ns.host_ip), 53));
        dns.address(FQDN, IpAddr::V4(ns.node_ip));
        dns.ptr(IpAddr::V4(ns.node_ip), FQDN);
        dns.soa("maas");
        std::fs::write(ns.etc().join("resolv.conf"), format!("nameserver {}\n", ns.host_ip)).unwrap();
        Self { ns, dns, dir: tempfile::tempdir().unwrap() }
    }

    fn vip(&self, last: u8) -> Ipv4Addr {
        let o = self.ns.node_ip.octets();
        Ipv4Addr::new(o[0], o[1], o[2], last)
    }

    fn verify(&self, config: &str, timeout: &str) -> (Option<i32>, serde_json::Value) {
        let cfg = self.dir.path().join("c.yaml");
        let base = format!("hostname: {FQDN}\ndns:\n  nameservers: [\"{}\"]\n", self.ns.host_ip);
        std::fs::write(&cfg, format!("{base}{config}")).unwrap();
        let out =
            self.ns.node_init(&["verify", "--config", cfg.to_str().unwrap(), "--output", "json", "--timeout", timeout]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
        (out.status.code(), v)
    }
}

fn check<'a>(v: &'a serde_json::Value, name: &str) -> (&'a str, &'a str) {
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"));
    (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap())
}

fn join(vip: Ipv4Addr) -> String {
    format!(
        "kubernetes:\n  role: worker\n  endpoint: {vip}:6443\n  token: abcdef.0123456789abcdef\n  \
         ca_cert_hashes: [\"sha256:{}\"]\n",
        "0".repeat(64)
    )
}

fn init(w: &World, vip: Ipv4Addr) -> String {
    let (ca, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, true);
    format!(
        "kubernetes:\n  role: init\n  endpoint: {vip}:6443\n  token: abcdef.0123456789abcdef\n  \
         certificate_key: \"{}\"\n  vip: {{interface: {}}}\n  ca:\n    cert: |\n{}    key: |\n{}",
        "a".repeat(64),
        w.ns.node_if,
        yaml_block(&ca, 6),
        yaml_block(&key.serialize_pem(), 6)
    )
}

#[test]
fn dns_checks_pass_against_a_zone_that_knows_the_node() {
    let w = World::new();
    w.dns.address("api.example.test", "10.50.0.1".parse().unwrap());
    let (_, v) = w.verify("  require: [api.example.test]\n", "5s");
    for name in ["dns_forward", "dns_reverse", "dns_zone", "dns_delegation", "dns_require"] {
        assert_eq!(check(&v, name).0, "pass", "{name}: {}", check(&v, name).1);
    }
    assert!(check(&v, "dns_forward").1.contains(&w.ns.node_ip.to_string()));
    assert!(check(&v, "dns_zone").1.contains("ns1.maas"));
}

#[test]
fn a_missing_required_name_is_named_with_its_server() {
    let w = World::new();
    let (code, v) = w.verify("  require: [missing.example.test]\n", "5s");
    assert_eq!(code, Some(1));
    let (s, r) = check(&v, "dns_require");
    assert_eq!(s, "fail");
    assert_eq!(r, format!("missing.example.test via {}:53: NXDOMAIN", w.ns.host_ip));
}

#[test]
fn a_wrong_address_fails_forward_and_reverse() {
    let w = World::new();
    w.dns.address("node2.maas", "10.9.9.9".parse().unwrap());
    let cfg = w.dir.path().join("c.yaml");
    std::fs::write(&cfg, format!("hostname: node2.maas\ndns:\n  nameservers: [\"{}\"]\n", w.ns.host_ip)).unwrap();
    let out = w.ns.node_init(&["verify", "--config", cfg.to_str().unwrap(), "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (s, r) = check(&v, "dns_forward");
    assert_eq!(s, "fail");
    assert!(r.contains("answered 10.9.9.9, none of which is this node's"), "{r}");
    let (s, r) = check(&v, "dns_reverse");
    assert_eq!(s, "fail");
    assert!(r.contains("no address of this node"), "{r}");
}

#[test]
fn a_dead_nameserver_costs_one_timeout_and_every_other_check_is_still_reported() {
    let w = World::new();
    w.dns.mode(Mode::Silent);
    let started = Instant::now();
    let (code, v) = w.verify("  require: [api.example.test]\n", "2s");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "verify took {took:?}");
    assert_eq!(code, Some(1));
    for name in ["dns_forward", "dns_reverse", "dns_zone", "dns_require"] {
        let (s, r) = check(&v, name);
        assert_eq!(s, "fail", "{name}");
        assert!(r.contains("no answer within") || r.contains("timed out"), "{name}: {r}");
    }
    for name in ["cpus", "memory", "swap", "cidr_overlap"] {
        assert_ne!(check(&v, name).1, "", "{name} was not reported");
    }
    assert!(!check(&v, "cidr_overlap").1.contains("timed out"));
}

#[test]
fn overlap_names_the_interface_and_prefix() {
    let w = World::new();
    w.ns.ip(&["route", "add", "172.30.0.0/16", "via", &w.ns.host_ip.to_string()]);
    let (_, v) = w.verify(&format!("{}  pod_cidr: 10.201.0.0/16\n", join(w.vip(100))), "5s");
    let (s, r) = check(&v, "cidr_overlap");
    assert_eq!(s, "fail");
    let net = format!("{}/24", Ipv4Addr::from(u32::from(w.ns.node_ip) & 0xffff_ff00));
    assert_eq!(r, format!("pod CIDR 10.201.0.0/16 overlaps address {net} on {}", w.ns.node_if));
    let (_, v) = w.verify(&format!("{}  service_cidr: 172.30.0.0/20\n", join(w.vip(100))), "5s");
    let (s, r) = check(&v, "cidr_overlap");
    assert_eq!(s, "fail");
    assert_eq!(r, format!("service CIDR 172.30.0.0/20 overlaps route 172.30.0.0/16 on {}", w.ns.node_if));
    let (_, v) = w.verify(&join(w.vip(100)), "5s");
    assert_eq!(check(&v, "cidr_overlap").0, "pass");
}

#[test]
fn the_vip_before_init_must_be_free_by_arp() {
    let w = World::new();
    let (_, v) = w.verify(&init(&w, w.vip(100)), "5s");
    let (s, r) = check(&v, "vip");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("is free"), "{r}");

    w.ns.host_address(w.vip(101));
    let (_, v) = w.verify(&init(&w, w.vip(101)), "5s");
    let (s, r) = check(&v, "vip");
    assert_eq!(s, "fail");
    assert!(r.contains("is already held") && r.contains("answers ARP"), "{r}");

    let wrong_if = init(&w, w.vip(100)).replace(&format!("interface: {}", w.ns.node_if), "interface: eth9");
    let (_, v) = w.verify(&wrong_if, "5s");
    assert!(check(&v, "vip").1.contains("but kubernetes.vip.interface is eth9"), "{}", check(&v, "vip").1);

    let (_, v) = w.verify(&init(&w, w.ns.node_ip), "5s");
    assert!(check(&v, "vip").1.contains("already an address of this node"));
    let (_, v) = w.verify(&init(&w, "10.77.0.1".parse().unwrap()), "5s");
    assert!(check(&v, "vip").1.contains("is in no local subnet"));
}

#[test]
fn the_vip_before_a_join_must_accept_tcp() {
    let w = World::new();
    let (_, v) = w.verify(&join(w.vip(103)), "3s");
    let (s, r) = check(&v, "vip");
    assert_eq!(s, "fail");
    assert!(r.contains("does not accept TCP") || r.contains("no TCP answer"), "{r}");

    w.ns.host_address(w.vip(102));
    let _api = std::net::TcpListener::bind((w.vip(102), 6443)).unwrap();
    let (_, v) = w.verify(&join(w.vip(102)), "3s");
    let (s, r) = check(&v, "vip");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("accepts TCP"));
}

#[test]
fn egress_goes_through_the_proxy_and_names_the_failing_step() {
    let w = World::new();
    let bg = Background::new();
    let side = |port: u16| SocketAddr::new(IpAddr::V4(w.ns.host_ip), port);
    let (tls, ca) = tls_server(&bg, side(0), &["api.example.test"]);
    let (_, other_ca) = tls_server(&bg, side(0), &["api.example.test"]);
    let allow = connect_proxy(&bg, side(0), ProxyMode::Allow(tls));
    let auth = connect_proxy(&bg, side(0), ProxyMode::Auth { user_pass: "u:p@ss".into(), upstream: tls });
    let forbid = connect_proxy(&bg, side(0), ProxyMode::Forbid);
    let closed = std::net::TcpListener::bind(side(0)).unwrap().local_addr().unwrap();
    let run = |proxy: &str, ca: &str| {
        let cfg = w.dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            format!(
                "hostname: {FQDN}\ndns:\n  nameservers: [\"{}\"]\n  require: [api.example.test]\nproxy:\n  https: {proxy}\n  ca_cert: |\n{}",
                w.ns.host_ip,
                yaml_block(ca, 4)
            ),
        )
        .unwrap();
        let out = w.ns.node_init(&["verify", "--config", cfg.to_str().unwrap(), "--output", "json", "--timeout", "5s"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = check(&v, "egress");
        let p = check(&v, "proxy");
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
