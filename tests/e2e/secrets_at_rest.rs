//! The join material after the join: `node-init run --root` takes each
//! role to done with the kubeadm double, then no file of the root holds
//! the token, its secret half, the certificate key or the CA key but where
//! kubeadm keeps them, and `status`, `config`, a second `run` and (on the
//! init node) `join-material` work on what is left without calling kubeadm
//! to join again.

use node_init_tests::cluster::{Secrets, userdata};
use node_init_tests::kube::{Serve, api_server};
use node_init_tests::kubeadm::Node;
use node_init_tests::net::Background;
use node_init_tests::*;

/// Where the double keeps what kubeadm was given (the `--config` file of
/// each call), which the real kubeadm does not: not the node's disk as
/// kubeadm leaves it.
const DOUBLE_RECORDS: &str = "var/log/kubeadm/";

/// Runs `role` to done with cloud-init's copies of its user data, then
/// checks the root for every secret and reruns.
fn joins_then_keeps_no_join_material(role: &str) {
    let s = Secrets::new();
    let ca = s.cluster_ca();
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &ca, &s.get("token"), Serve::Good);
    let cluster = if role == "init" {
        "hostname: node1.maas\nkubernetes:\n  endpoint: 10.11.12.100:6443\n  version: v1.31.4\n  \
         vip: {interface: eth0}\n"
            .to_owned()
    } else {
        format!("hostname: node2.maas\nkubernetes:\n  endpoint: {}\n  version: v1.31.4\n", api.addr)
    };
    let node = Node::new(&userdata(role, &cluster, &s), 0);
    node.cloud_init_copies();
    let name = if role == "init" { "node1.maas" } else { "node2.maas" };
    node.issue_kubelet(&ca, &api.addr.to_string(), name);
    let before = node.files_holding(&s.get("token"));
    assert_eq!(before.len(), 3, "the config layer and cloud-init's copies hold the token: {before:?}");
    let old = std::fs::read(node.path("var/lib/cloud/instances/i-e2e-1/user-data.txt")).unwrap();
    assert!(old.starts_with(&[0x1f, 0x8b]), "the earlier instance's copy is gzipped");
    let out = node.run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let calls = node.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let log = text(&out.stderr);
    assert!(log.contains("scrubbed the join material"), "{log}");

    let token = s.get("token");
    let key_pem = std::fs::read_to_string(s.dir.join("ca.key")).unwrap();
    let mut secrets = vec![
        ("the token", token.clone()),
        ("the token's secret", token[7..].to_owned()),
        ("the certificate key", s.get("certificate-key")),
    ];
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        secrets.push(("a line of the CA key", line.to_owned()));
    }
    for (what, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "{what} reached the log");
        let found: Vec<String> = node
            .files_holding(secret)
            .into_iter()
            .filter(|f| !f.starts_with(DOUBLE_RECORDS) && !f.starts_with("etc/kubernetes/pki/"))
            .collect();
        assert!(found.is_empty(), "{role}: {what} is still in {found:?}");
    }
    if role == "init" {
        assert_eq!(node.read("etc/kubernetes/pki/ca.key"), key_pem, "kubeadm keeps the CA key");
    }
    // What stays: the files, their modes, everything but the secrets.
    let layer = node.read("etc/node-init/config.d/50-userdata.yaml");
    assert!(layer.contains("token: scrubbed") && layer.contains(&format!("role: {role}")), "{layer}");
    assert_eq!(mode(&node.path("etc/node-init/config.d/50-userdata.yaml")), 0o600);
    for copy in ["var/lib/cloud/instances/i-e2e-2/user-data.txt", "var/lib/cloud/instances/i-e2e-2/user-data.txt.i"] {
        let ud = node.read(copy);
        assert!(ud.contains("token: scrubbed") && ud.contains("50-userdata.yaml"), "{copy}: {ud}");
    }
    assert!(node.read("var/lib/cloud/instances/i-e2e-1/user-data.txt").starts_with("#cloud-config\n"));

    let status = node_init(&["status", "--root", &node.arg(), "--output", "json"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let k = st["stages"].as_array().unwrap().iter().find(|s| s["name"] == "kubernetes").unwrap().clone();
    assert_eq!(k["status"], "done", "{st}");
    let scrubbed = k["details"]["scrubbed"].to_string();
    assert!(scrubbed.contains("/var/lib/cloud/instances/i-e2e-1/user-data.txt"), "{scrubbed}");
    let config = node_init(&["config", "--root", &node.arg()]);
    assert_eq!(config.status.code(), Some(0), "{}", text(&config.stderr));
    assert!(text(&config.stdout).contains("token: \"scrubbed\""), "{}", text(&config.stdout));

    let again = node.run();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(node.calls(), calls, "the second run called kubeadm");

    if role == "init" {
        // The scrubbed init node still mints material for the next node.
        node.control_plane(&ca, &api.addr.to_string());
        let out = node_init(&["join-material", "--root", &node.arg(), "--role", "worker"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let ud = text(&out.stdout);
        let fresh = &node.tokens()[0].0;
        assert!(ud.contains(fresh.as_str()) && !ud.contains("scrubbed"), "{ud}");
    }
}

#[test]
fn after_init_the_root_holds_the_ca_key_only_in_kubeadms_pki_and_no_token_or_certificate_key() {
    joins_then_keeps_no_join_material("init");
}

#[test]
fn after_a_control_plane_join_the_root_holds_no_token_or_certificate_key() {
    joins_then_keeps_no_join_material("control-plane");
}

#[test]
fn after_a_worker_join_the_root_holds_no_token() {
    joins_then_keeps_no_join_material("worker");
}
