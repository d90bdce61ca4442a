use std::net::IpAddr;
use std::time::{Duration, Instant};

use node_init_tests::dns::{Mode, TestDns};

use super::*;
use crate::config;
use crate::net::Address;
use crate::testing::World;

const FQDN: &str = "node1.maas";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs the stage for node1.maas at 127.0.0.1 against `dns`.
fn run(dns: &TestDns, extra: &str) -> Result<Outcome> {
    stage(&format!("dns:\n  nameservers: [\"{}\"]\n{extra}", dns.arg()), &[])
}

/// Runs the stage for node1.maas at 127.0.0.1 and 10.1.2.3 with `yaml`;
/// the servers are `dns.nameservers`, else the system's `system`.
fn stage(yaml: &str, system: &[&TestDns]) -> Result<Outcome> {
    let config = config::parse(yaml, "test").unwrap();
    let mut w = World::new();
    w.node.fqdn = Ok(FQDN.into());
    w.node.addresses =
        ["127.0.0.1/8", "10.1.2.3/24"].map(|a| Address { interface: "eth0".into(), net: a.parse().unwrap() }).to_vec();
    w.node.maas_servers = config.dns.nameservers.iter().map(|n| n.0).collect();
    if w.node.maas_servers.is_empty() {
        w.node.maas_servers = system.iter().map(|d| d.addr).collect();
    }
    w.stage(&DnsStage, &config)
}

/// The details of a finished run, with its summary as `summary`.
fn facts(o: Outcome) -> Details {
    match o {
        Outcome::Done(d) => {
            let mut details = d.details;
            if let Some(s) = d.summary {
                details.insert("summary".into(), s.into());
            }
            details
        }
        other => panic!("not done: {other:?}"),
    }
}

fn error(r: Result<Outcome>) -> String {
    format!("{:#}", r.expect_err("the stage passed"))
}

#[test]
fn passes_when_forward_and_reverse_agree() {
    let dns = TestDns::start();
    dns.address(FQDN, ip("10.1.2.3"));
    dns.ptr(ip("10.1.2.3"), FQDN);
    let f = facts(run(&dns, "").unwrap());
    assert_eq!(f["address"], "10.1.2.3");
    assert_eq!(f["rounds"], 1);
    assert!(!f.contains_key("warnings"), "{f:?}");
}

#[test]
fn nxdomain_fails_after_the_timeout_naming_name_server_and_answer() {
    let dns = TestDns::start();
    let started = Instant::now();
    let err = error(run(&dns, "  timeout: 2s\n"));
    assert!(err.contains(&format!("node1.maas via {}: NXDOMAIN", dns.addr)), "{err}");
    assert!(err.contains("still after 2s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(dns.queries() >= 2, "the stage did not retry");
}

#[test]
fn an_address_that_is_not_the_nodes_fails() {
    let dns = TestDns::start();
    dns.address(FQDN, ip("10.9.9.9"));
    let err = error(run(&dns, "  timeout: 1s\n"));
    assert!(err.contains("answered 10.9.9.9, none of which is this node's (127.0.0.1, 10.1.2.3)"), "{err}");
}

#[test]
fn a_missing_or_wrong_ptr_is_a_warning() {
    let dns = TestDns::start();
    dns.address(FQDN, ip("10.1.2.3"));
    let f = facts(run(&dns, "").unwrap());
    assert_eq!(f["warnings"][0], format!("no PTR for 10.1.2.3 via {}: NXDOMAIN", dns.addr));

    dns.ptr(ip("10.1.2.3"), "other.maas");
    let f = facts(run(&dns, "").unwrap());
    assert_eq!(f["warnings"][0], format!("PTR of 10.1.2.3 via {} names other.maas (not node1.maas)", dns.addr));
}

#[test]
fn servfail_is_reported_as_such() {
    let dns = TestDns::start();
    dns.address(FQDN, ip("10.1.2.3"));
    dns.mode(Mode::ServFail);
    let err = error(run(&dns, "  timeout: 1s\n"));
    assert!(err.contains(&format!("node1.maas via {}: SERVFAIL", dns.addr)), "{err}");
}

#[test]
fn a_server_that_never_answers_costs_the_timeout_and_no_more() {
    let dns = TestDns::start();
    dns.mode(Mode::Silent);
    let started = Instant::now();
    let err = error(run(&dns, "  timeout: 2s\n"));
    assert!(err.contains(&format!("node1.maas via {}: no answer within 2s", dns.addr)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[test]
fn a_record_that_appears_late_is_waited_for() {
    let dns = std::sync::Arc::new(TestDns::start());
    dns.ptr(ip("10.1.2.3"), FQDN);
    let late = dns.clone();
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        late.address(FQDN, ip("10.1.2.3"));
    });
    let started = Instant::now();
    let f = facts(run(&dns, "  timeout: 30s\n").unwrap());
    adder.join().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(f["rounds"].as_u64().unwrap() > 1, "{f:?}");
    assert_eq!(f["address"], "10.1.2.3");
}

#[test]
fn every_required_name_must_resolve() {
    let dns = TestDns::start();
    dns.address(FQDN, ip("10.1.2.3"));
    dns.ptr(ip("10.1.2.3"), FQDN);
    dns.address("api.spectrocloud.com", ip("10.50.0.1"));
    assert!(run(&dns, "  require: [api.spectrocloud.com]\n").is_ok());
    let err = error(run(&dns, "  require: [api.spectrocloud.com, registry.example.com]\n  timeout: 1s\n"));
    assert!(err.contains(&format!("registry.example.com via {}: NXDOMAIN", dns.addr)), "{err}");
    assert!(!err.contains("api.spectrocloud.com via"), "{err}");
}

/// Runs the stage with the system's servers `dns` (no `dns.nameservers`).
fn run_system(dns: &[&TestDns]) -> Result<Outcome> {
    stage("dns:\n  timeout: 1s\n", dns)
}

#[test]
fn a_system_server_that_does_not_know_the_zone_beside_one_that_answers_right_is_a_warning() {
    let (maas, site) = (TestDns::start(), TestDns::start());
    maas.address(FQDN, ip("10.1.2.3"));
    maas.ptr(ip("10.1.2.3"), FQDN);
    let f = facts(run_system(&[&site, &maas]).unwrap());
    assert_eq!(f["address"], "10.1.2.3");
    let warnings = f["warnings"].to_string();
    assert!(
        warnings.contains(&format!("node1.maas via {}: NXDOMAIN (another server answered 10.1.2.3", site.addr)),
        "{f:?}"
    );

    // Alone, or among servers none of which knows it, it fails as before.
    let err = error(run_system(&[&site]));
    assert!(err.contains(&format!("node1.maas via {}: NXDOMAIN", site.addr)), "{err}");
    let other = TestDns::start();
    let err = error(run_system(&[&site, &other]));
    assert!(err.contains(&format!("node1.maas via {}: NXDOMAIN", site.addr)), "{err}");
    assert!(err.contains(&format!("node1.maas via {}: NXDOMAIN", other.addr)), "{err}");
}

#[test]
fn a_system_server_that_answers_a_wrong_address_fails_even_beside_one_that_answers_right() {
    let (maas, stale) = (TestDns::start(), TestDns::start());
    maas.address(FQDN, ip("10.1.2.3"));
    stale.address(FQDN, ip("10.9.9.9"));
    let err = error(run_system(&[&maas, &stale]));
    assert!(err.contains(&format!("node1.maas via {}: answered 10.9.9.9", stale.addr)), "{err}");
}

#[test]
fn configured_servers_must_all_know_the_zone() {
    let (maas, site) = (TestDns::start(), TestDns::start());
    maas.address(FQDN, ip("10.1.2.3"));
    let yaml = format!("dns:\n  nameservers: [\"{}\", \"{}\"]\n  timeout: 1s\n", maas.arg(), site.arg());
    let err = error(stage(&yaml, &[]));
    assert!(err.contains(&format!("node1.maas via {}: NXDOMAIN", site.addr)), "{err}");
}
