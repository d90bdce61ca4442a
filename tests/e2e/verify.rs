//! `node-init verify`: JSON shape, exit codes, and checks that flip with
//! the config, on this machine's CPUs, memory and disk.

use node_init_tests::preflight::{Preflight, check};
use node_init_tests::*;

const JOIN: &str = "kubernetes:\n  role: worker\n  endpoint: 10.0.0.1:6443\n  token: abcdef.0123456789abcdef\n  ca_cert_hashes: [\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"]\n";

/// Runs verify in a namespace of its own whose resolv.conf names a DNS
/// stand-in on the host side, so no question leaves the test's network.
fn verify(config: &str) -> (Option<i32>, serde_json::Value) {
    Preflight::new().verify(config, &[])
}

#[test]
fn cpu_minimum_decides_pass_or_fail() {
    let (_, low) = verify("resources: {cpus: 1, memory_mib: 1, disk_gib: 1}\n");
    assert_eq!(check(&low, "cpus")["status"], "pass");
    assert_eq!(check(&low, "memory")["status"], "pass");
    let (code, high) = verify("resources: {cpus: 4096}\n");
    assert_eq!(code, Some(1));
    assert_eq!(check(&high, "cpus")["status"], "fail");
    assert!(check(&high, "cpus")["reason"].as_str().unwrap().contains("minimum 4096"));
    let s = &high["summary"];
    let total = s["pass"].as_u64().unwrap() + s["fail"].as_u64().unwrap() + s["skip"].as_u64().unwrap();
    assert_eq!(total as usize, high["checks"].as_array().unwrap().len());
    assert!(check(&high, "cpus")["duration_ms"].is_u64());
}

#[test]
fn a_pod_cidr_over_the_machine_network_fails_naming_it() {
    // Between them these two halves cover every IPv4 address this machine has.
    let (code, v) = verify(&format!("{JOIN}  pod_cidr: 0.0.0.0/1\n  service_cidr: 128.0.0.0/1\n"));
    assert_eq!(code, Some(1));
    let c = check(&v, "cidr_overlap");
    assert_eq!(c["status"], "fail");
    assert!(c["reason"].as_str().unwrap().contains("overlaps"), "{c}");
}

#[test]
fn bad_config_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "resources: {cpus: many}\n").unwrap();
    let out = node_init(&["verify", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("resources.cpus"));
}
