//! Config intake from cloud-init user data in its three encodings, through
//! the real binary, and `status` after the run.

use std::io::Write;

use node_init_tests::*;

const CLOUD_CONFIG: &str = "#cloud-config\npackages: [curl]\nusers:\n  - name: ops\n    groups: [sudo]\nruncmd:\n  - [sh, -c, \"echo never run by node-init\"]\nnode_init:\n  proxy:\n    http: http://ops:pr0xy-pw@10.0.0.1:3128\n    no_proxy: [.corp]\n  dns:\n    domain: lab\n";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn mime(part: &str) -> String {
    format!(
        "Content-Type: multipart/mixed; boundary=\"===b===\"\nMIME-Version: 1.0\n\n--===b===\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\n#!/bin/sh\nexit 0\n\n--===b===\nContent-Type: text/cloud-config; charset=\"us-ascii\"\n\n{part}\n--===b===--\n"
    )
}

fn run_with_user_data(bytes: &[u8]) -> FakeRoot {
    let root = FakeRoot::new();
    root.write("var/lib/cloud/instance/user-data.txt", bytes);
    root.write("etc/hostname", "node3\n");
    let out = node_init(&["run", "--root", &root.arg()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("pr0xy-pw"), "password in the log: {}", text(&out.stderr));
    root
}

fn assert_applied(root: &FakeRoot) {
    let env = root.read("etc/environment");
    assert!(env.starts_with("LANG=C.UTF-8\n# BEGIN node-init proxy\n"), "{env}");
    assert!(env.contains("HTTP_PROXY=\"http://ops:pr0xy-pw@10.0.0.1:3128/\""), "{env}");
    // The FQDN is the system hostname plus dns.domain from the user data.
    assert!(env.contains(",node3.lab,"), "{env}");
    assert!(env.contains(",corp,.corp,"), "{env}");
}

#[test]
fn plain_cloud_config_is_applied() {
    assert_applied(&run_with_user_data(CLOUD_CONFIG.as_bytes()));
}

#[test]
fn gzipped_cloud_config_is_applied() {
    assert_applied(&run_with_user_data(&gzip(CLOUD_CONFIG.as_bytes())));
}

#[test]
fn mime_multipart_cloud_config_is_applied() {
    assert_applied(&run_with_user_data(mime(CLOUD_CONFIG).as_bytes()));
}

#[test]
fn status_reports_the_run_without_secrets() {
    let root = run_with_user_data(CLOUD_CONFIG.as_bytes());
    let out = node_init(&["status", "--root", &root.arg(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["done"], true);
    assert_eq!(v["stages"][0]["name"], "proxy");
    assert_eq!(v["stages"][0]["status"], "done");
    assert_eq!(v["stages"][0]["attempts"], 1);
    assert_eq!(v["stages"][0]["boot_id"], "11111111-2222-3333-4444-555555555555");
    let table = node_init(&["status", "--root", &root.arg()]);
    let t = text(&table.stdout);
    assert!(t.contains("proxy") && t.contains("done") && t.contains("node-init: done"), "{t}");
    for shown in [text(&out.stdout), t] {
        assert!(!shown.contains("pr0xy-pw"), "{shown}");
    }
}

#[test]
fn a_bad_node_init_key_in_user_data_is_exit_2() {
    let root = FakeRoot::new();
    root.write("var/lib/cloud/instance/user-data.txt", gzip(b"#cloud-config\nnode_init:\n  os: {reboot: often}\n"));
    let before = root.snapshot();
    let out = node_init(&["run", "--root", &root.arg()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("user-data.txt (node_init key): os.reboot"), "{err}");
    assert_eq!(root.snapshot(), before);
}
