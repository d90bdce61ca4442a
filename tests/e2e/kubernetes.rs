//! The kubernetes stage end to end: `secrets` and `userdata` make a node's
//! user data, the real rootfs takes it through the `--root` intake, and a
//! recording `kubeadm` (`src/kubeadm.rs`) inside the chroot keeps every call with the config
//! and the kube-vip manifest as they were at that moment. Joins discover
//! against the kube-apiserver stand-in (`src/kube.rs`).

use node_init_tests::cluster::{Secrets, userdata};
use node_init_tests::kube::{ClusterCa, Serve, api_server};
use node_init_tests::kubeadm::Node;
use node_init_tests::net::Background;
use node_init_tests::*;

#[test]
fn secrets_are_private_and_never_overwritten() {
    let s = Secrets::new();
    assert_eq!(mode(&s.dir), 0o700);
    for (f, m) in
        [("ca.crt", 0o644), ("ca.key", 0o600), ("token", 0o600), ("certificate-key", 0o600), ("ca-cert-hash", 0o644)]
    {
        assert_eq!(mode(&s.dir.join(f)), m, "{f}");
    }
    assert!(s.get("token").parse::<String>().unwrap().len() == 23);
    let before = snapshot(&s.dir);
    let again = node_init(&["secrets", "--out", &s.arg()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("refusing to overwrite existing secrets"), "{}", text(&again.stderr));
    assert_eq!(snapshot(&s.dir), before);
    // The CA hash file is what `cert-hash` computes from the CA.
    let hash = node_init(&["cert-hash", &s.dir.join("ca.crt").display().to_string()]);
    assert_eq!(text(&hash.stdout).trim(), s.get("ca-cert-hash"));
}

#[test]
fn init_user_data_round_trips_into_kubeadm_init_with_the_ca_and_kube_vip() {
    let s = Secrets::new();
    let cluster = "kubernetes:\n  endpoint: 10.11.12.100:6443\n  version: v1.31.4\n  vip: {interface: eth0}\n";
    let ud = userdata("init", cluster, &s);
    assert!(ud.starts_with("#cloud-config\n") && ud.contains("path: /etc/node-init/config.d/50-userdata.yaml"), "{ud}");
    assert!(ud.contains("permissions: \"0600\"") && ud.contains("owner: root:root"), "{ud}");
    let node = Node::new(&ud, 0);
    let out = node.run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(node.calls(), ["init --config /etc/node-init/kubeadm.yaml --upload-certs"]);
    let config = node.read("var/log/kubeadm/config.1");
    assert!(config.contains(&format!("- token: {}", s.get("token"))), "{config}");
    assert!(config.contains(&format!("certificateKey: {}", s.get("certificate-key"))), "{config}");
    assert!(config.contains("apiVersion: kubeadm.k8s.io/v1beta4") && config.contains("kubernetesVersion: v1.31.4"));
    assert!(config.contains("controlPlaneEndpoint: 10.11.12.100:6443"), "{config}");
    assert_eq!(node.read("etc/kubernetes/pki/ca.crt"), std::fs::read_to_string(s.dir.join("ca.crt")).unwrap());
    assert_eq!(node.read("etc/kubernetes/pki/ca.key"), std::fs::read_to_string(s.dir.join("ca.key")).unwrap());
    assert_eq!(mode(&node.path("etc/kubernetes/pki/ca.key")), 0o600);
    // kube-vip read super-admin.conf while kubeadm init ran, admin.conf after.
    assert!(node.read("var/log/kubeadm/kube-vip.1").contains("path: /etc/kubernetes/super-admin.conf"));
    let after = node.read("etc/kubernetes/manifests/kube-vip.yaml");
    assert!(after.contains("path: /etc/kubernetes/admin.conf") && !after.contains("super-admin"), "{after}");
    assert_eq!(node.read("run/cluster-api/bootstrap-success.complete"), "success\n");
    assert!(node.path("var/lib/node-init/done").exists());
    let status = node_init(&["status", "--root", &node.arg(), "--output", "json"]);
    let logs = text(&out.stderr) + &text(&status.stdout);
    for secret in [s.get("token"), s.get("certificate-key"), "PRIVATE KEY".to_owned()] {
        assert!(!logs.contains(&secret), "a secret reached the logs or status: {logs}");
    }
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let k = st["stages"].as_array().unwrap().iter().find(|s| s["name"] == "kubernetes").unwrap().clone();
    assert_eq!(k["status"], "done", "{st}");
    assert_eq!(st["done"], true);
}

#[test]
fn worker_user_data_discovers_then_joins_retrying_with_reset() {
    let s = Secrets::new();
    let ca = s.cluster_ca();
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &ca, &s.get("token"), Serve::Good);
    let cluster = format!("kubernetes:\n  endpoint: {}\n  version: v1.30.2\n", api.addr);
    let ud = userdata("worker", &cluster, &s);
    assert!(!ud.contains("PRIVATE KEY") && !ud.contains(&s.get("certificate-key")), "a worker got the CA or cert key");
    // The worker's pin is the CA's hash as cert-hash computes it.
    let hash = text(&node_init(&["cert-hash", &s.dir.join("ca.crt").display().to_string()]).stdout).trim().to_owned();
    assert!(ud.contains(&format!("- {hash}")), "{ud}");

    let node = Node::new(&ud, 2);
    let out = node.run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let join = "join --config /etc/node-init/kubeadm.yaml";
    assert_eq!(node.calls(), [join, "reset -f", join, "reset -f", join]);
    let config = node.read("var/log/kubeadm/config.5");
    assert!(config.starts_with("apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\n"), "{config}");
    assert!(config.contains(&format!("apiServerEndpoint: {}", api.addr)) && config.contains(&format!("- {hash}")));
    assert!(config.contains(&format!("tlsBootstrapToken: {}", s.get("token"))), "{config}");
    assert!(api.requests() >= 2);
    assert!(node.path("run/cluster-api/bootstrap-success.complete").exists());
}

#[test]
fn a_wrong_ca_hash_refuses_the_join_and_kubeadm_is_never_called() {
    let ca = ClusterCa::new();
    let token = "abcdef.0123456789abcdef";
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &ca, token, Serve::Good);
    let wrong = format!("sha256:{}", "e".repeat(64));
    let ud = format!(
        "#cloud-config\nnode_init:\n  kubernetes:\n    role: worker\n    endpoint: {}\n    version: v1.31.4\n    \
         token: {token}\n    ca_cert_hashes: [{wrong}]\n",
        api.addr
    );
    let node = Node::new(&ud, 0);
    let out = node.run();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("refusing to join") && err.contains("is not pinned") && err.contains(&wrong), "{err}");
    assert!(node.calls().is_empty(), "kubeadm was called: {:?}", node.calls());
    assert!(!node.path("run/cluster-api/bootstrap-success.complete").exists());
    assert!(!node.path("var/lib/node-init/done").exists());
}

#[test]
fn userdata_refuses_what_the_node_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, "kubernetes:\n  endpoint: 10.11.12.100:6443\n  vip: {interface: eth0}\n").unwrap();
    let c = cluster.display().to_string();
    // No secrets: init has no token, then no CA.
    let out = node_init(&["userdata", "--role", "init", "--config", &c]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("invalid configuration in {c}: kubernetes.token")),
        "{}",
        text(&out.stderr)
    );
    let out = node_init(&["userdata", "--role", "worker", "--config", &c, "--secrets", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--secrets: cannot read /nonexistent/ca.crt"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

/// The status record of the kubernetes stage under `root`.
fn kubernetes_record(node: &Node) -> serde_json::Value {
    let status = node_init(&["status", "--root", &node.arg(), "--output", "json"]);
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    st["stages"].as_array().unwrap().iter().find(|s| s["name"] == "kubernetes").unwrap().clone()
}

#[test]
fn a_worker_cut_off_after_kubeadm_join_is_found_a_member_on_the_rerun_not_reset() {
    let s = Secrets::new();
    let ca = s.cluster_ca();
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &ca, &s.get("token"), Serve::Good);
    let cluster = format!("hostname: node2.maas\nkubernetes:\n  endpoint: {}\n  version: v1.31.4\n", api.addr);
    let node = Node::new(&userdata("worker", &cluster, &s), 0);
    node.issue_kubelet(&ca, &api.addr.to_string(), "node2.maas");
    let out = node.run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(node.path("etc/kubernetes/kubelet.conf").exists(), "the double did not join");
    api.register("node2.maas");
    // The power goes before node-init saves the state; the boot after has
    // kubeadm's files and no record of them.
    std::fs::remove_file(node.path("var/lib/node-init/state.json")).unwrap();
    std::fs::remove_file(node.path("var/lib/node-init/done")).unwrap();
    set_boot_id(&node.path(""), "e2e-boot-2");
    let again = node.run();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(node.calls(), ["join --config /etc/node-init/kubeadm.yaml"], "reset or joined again");
    assert!(node.path("etc/kubernetes/kubelet.conf").exists());
    assert_eq!(api.node_gets(), [("/api/v1/nodes/node2.maas".to_owned(), 200)]);
    let k = kubernetes_record(&node);
    assert_eq!(k["details"]["membership"], "member (GET /api/v1/nodes/node2.maas: 200)", "{k}");
    assert!(k["summary"].as_str().unwrap().contains("already a member"), "{k}");
}

#[test]
fn a_rerun_that_cannot_reach_the_api_server_resets_nothing() {
    let s = Secrets::new();
    let ca = s.cluster_ca();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cluster = format!(
        "hostname: node2.maas\nkubernetes:\n  endpoint: 127.0.0.1:{port}\n  version: v1.31.4\n  discovery_timeout: 2s\n"
    );
    let node = Node::new(&userdata("control-plane", &cluster, &s), 0);
    node.left_kubelet(&ca, &format!("127.0.0.1:{port}"), "node2.maas");
    node.write("var/lib/etcd/member/snap/db", "the cluster");
    let out = node.run();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot tell whether node2.maas is a member") && err.contains("will not reset"), "{err}");
    assert!(node.calls().is_empty(), "kubeadm was called: {:?}", node.calls());
    assert_eq!(node.read("var/lib/etcd/member/snap/db"), "the cluster");
}

#[test]
fn userdata_says_when_its_token_and_uploaded_certificates_stop_working() {
    let s = Secrets::new();
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, "kubernetes:\n  endpoint: 10.11.12.100:6443\n  token_ttl: 12h\n").unwrap();
    let c = cluster.display().to_string();
    let out = node_init(&["userdata", "--role", "control-plane", "--config", &c, "--secrets", &s.arg()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let id = &s.get("token")[..6];
    assert!(err.contains(&format!("bootstrap token {id}, which expires 12h after the init node's kubeadm init")));
    assert!(err.contains("within 12h of the init node's first boot"), "{err}");
    assert!(err.contains("kubeadm deletes after 2h: deploy this node within 2h"), "{err}");
    assert!(err.contains("node-init join-material --role control-plane"), "{err}");
    assert!(!err.contains(&s.get("token")) && !err.contains(&s.get("certificate-key")), "a secret on stderr: {err}");
}

/// A cluster's first node, as `join-material` finds it: its user data
/// taken in, admin.conf and the CA where kubeadm put them.
fn first_node(s: &Secrets, api: &node_init_tests::kube::ApiServer) -> Node {
    let cluster = format!(
        "hostname: node1.maas\nkubernetes:\n  endpoint: {}\n  version: v1.31.4\n  vip: {{interface: eth0}}\n  \
         kubelet_extra_args: {{node-labels: site=lab, node-ip: 10.11.12.21}}\n",
        api.addr
    );
    let node = Node::new(&userdata("init", &cluster, s), 0);
    node.control_plane(&s.cluster_ca(), &api.addr.to_string());
    node
}

#[test]
fn join_material_grows_a_one_node_cluster_with_a_fresh_token_and_certificate_key() {
    let s = Secrets::new();
    let ca = s.cluster_ca();
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &ca, &s.get("token"), Serve::Good);
    let first = first_node(&s, &api);
    let out = node_init(&["join-material", "--root", &first.arg(), "--role", "control-plane", "--ttl", "2h"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        first.calls(),
        ["token create --ttl 2h0m0s --print-join-command", "init phase upload-certs --upload-certs"]
    );
    let [(token, ttl)] = &first.tokens()[..] else { panic!("{:?}", first.tokens()) };
    assert_eq!(ttl, "2h0m0s");
    let key = first.read("var/log/kubeadm/certificate-key").trim().to_owned();
    assert_ne!(token, &s.get("token"));
    assert_ne!(key, s.get("certificate-key"));
    // Secrets reach stdout only; stderr says when they stop working.
    let ud = text(&out.stdout);
    let err = text(&out.stderr);
    for secret in [&token[7..], &key, "PRIVATE KEY"] {
        assert!(!err.contains(secret), "a secret on stderr: {err}");
    }
    assert!(err.contains(&format!("the bootstrap token {} expires in 2h, at ", &token[..6])), "{err}");
    assert!(err.contains("control-plane certificates uploaded under the new key in 2h"), "{err}");
    assert!(ud.starts_with("#cloud-config\n") && !ud.contains("PRIVATE KEY") && !ud.contains("node1.maas"), "{ud}");
    assert!(!ud.contains("node-ip") && ud.contains("site=lab"), "{ud}");

    // The user data works: a new node takes it and joins with the new
    // token, which the bootstrap signer signs cluster-info for.
    api.add_token(token);
    let second = Node::new(&ud, 0);
    let joined = second.run();
    assert_eq!(joined.status.code(), Some(0), "{}", text(&joined.stderr));
    assert_eq!(second.calls(), ["join --config /etc/node-init/kubeadm.yaml"]);
    let config = second.read("var/log/kubeadm/config.1");
    assert!(config.contains(&format!("tlsBootstrapToken: {token}")), "{config}");
    assert!(config.contains(&format!("certificateKey: {key}")), "{config}");
    assert!(config.contains(&format!("- {}", s.get("ca-cert-hash"))), "{config}");
}

#[test]
fn join_material_for_a_worker_uploads_no_certificates() {
    let s = Secrets::new();
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &s.cluster_ca(), &s.get("token"), Serve::Good);
    let first = first_node(&s, &api);
    let out = node_init(&["join-material", "--root", &first.arg(), "--role", "worker"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // kubernetes.token_ttl's default, kubeadm's own.
    assert_eq!(first.calls(), ["token create --ttl 24h0m0s --print-join-command"]);
    let ud = text(&out.stdout);
    assert!(ud.contains("role: worker") && !ud.contains("certificate_key"), "{ud}");
    assert!(ud.contains(&first.tokens()[0].0), "{ud}");
}

#[test]
fn join_material_where_kubeadm_cannot_reach_the_cluster_fails_with_kubeadms_words() {
    let s = Secrets::new();
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &s.cluster_ca(), &s.get("token"), Serve::Good);
    let first = first_node(&s, &api);
    std::fs::remove_file(first.path("etc/kubernetes/admin.conf")).unwrap();
    let out = node_init(&["join-material", "--root", &first.arg(), "--role", "control-plane"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("creating a bootstrap token") && err.contains("failed to load admin kubeconfig"), "{err}");
    assert!(out.stdout.is_empty());
}
