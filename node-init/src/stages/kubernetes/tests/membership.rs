//! A rerun over the files of an earlier kubeadm run: a member is done and
//! never reset, a node the API server does not have is reset, and anything
//! that proves neither stops the stage without a reset.

use super::*;
use crate::stages::kubernetes::membership::KUBELET_CONF;

const CLIENT_PEM: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";

/// What a joined node keeps: kubelet.conf as the kubelet writes it after
/// TLS bootstrap, pointing at its client certificate and key.
fn kubelet(w: &World, ca: &ClusterCa, (cert, key): (String, String)) {
    let conf = node_init_tests::kubeadm::kubeconfig(ca, "10.11.12.100:6443", CLIENT_PEM);
    w.root.write(KUBELET_CONF, conf.as_bytes(), 0o600).unwrap();
    w.root.write(CLIENT_PEM, (cert + &key).as_bytes(), 0o600).unwrap();
}

#[test]
fn a_member_is_done_without_reset_or_kubeadm_even_with_an_expired_token() {
    // The token expired: cluster-info carries no signature for it any more.
    let (_bg, ca, server) = served(Serve::NoSignature);
    server.register("node1.maas");
    let w = World::new();
    kubelet(&w, &ca, ca.kubelet_client("node1.maas"));
    assert_eq!(run(&w, &join_yaml("worker", &server.addr.to_string(), &ca.hash(), ""), false), End::Done);
    assert!(w.runner.calls().is_empty(), "kubeadm was called: {:?}", w.runner.argvs());
    assert_eq!(server.node_gets(), [("/api/v1/nodes/node1.maas".to_owned(), 200)]);
    assert_eq!(server.requests(), 0, "a member needs no token discovery");
    let rec = w.record("kubernetes");
    assert_eq!(rec.status, Status::Done);
    assert_eq!(rec.details["membership"], "member (GET /api/v1/nodes/node1.maas: 200)");
    let summary = rec.summary.unwrap();
    assert!(summary.contains("found node1.maas already a member") && summary.contains("kubeadm not run"), "{summary}");
    assert_eq!(w.read(BOOTSTRAP_SUCCESS), "success\n");
}

#[test]
fn an_init_node_killed_before_kube_vip_moved_to_admin_conf_is_settled_not_reset() {
    let (_bg, ca, server) = served(Serve::Good);
    server.register("node1.maas");
    let w = World::new();
    kubelet(&w, &ca, ca.kubelet_client("node1.maas"));
    w.root.write("/etc/kubernetes/manifests/etcd.yaml", b"etcd", 0o600).unwrap();
    w.root.write(render::KUBE_VIP_MANIFEST, b"path: /etc/kubernetes/super-admin.conf\n", 0o600).unwrap();
    let yaml = init_yaml("  version: v1.31.4\n", &ca).replace("10.11.12.100:6443", &server.addr.to_string());
    assert_eq!(run(&w, &yaml, false), End::Done);
    assert!(w.runner.calls().is_empty(), "{:?}", w.runner.argvs());
    assert_eq!(w.read("/etc/kubernetes/manifests/etcd.yaml"), "etcd", "etcd's files were touched");
    let vip = w.read(render::KUBE_VIP_MANIFEST);
    assert!(vip.contains("path: /etc/kubernetes/admin.conf") && !vip.contains("super-admin"), "{vip}");
}

#[test]
fn a_node_the_api_server_does_not_have_is_reset_then_joined() {
    let (_bg, ca, server) = served(Serve::Good);
    let w = World::new();
    kubelet(&w, &ca, ca.kubelet_client("node1.maas"));
    assert_eq!(run(&w, &join_yaml("worker", &server.addr.to_string(), &ca.hash(), ""), false), End::Done);
    assert_eq!(w.runner.argvs(), ["kubeadm reset -f", "kubeadm join --config /etc/node-init/kubeadm.yaml"]);
    assert_eq!(server.node_gets(), [("/api/v1/nodes/node1.maas".to_owned(), 404)]);
    assert_eq!(w.record("kubernetes").details["membership"], "not a member (GET /api/v1/nodes/node1.maas: 404)");
}

/// Runs a rerun that must stop without a reset; returns the error.
fn cannot_tell(w: &World, endpoint: &str, hash: &str) -> String {
    assert_eq!(run(w, &join_yaml("control-plane", endpoint, hash, ""), false), End::Failed);
    assert!(w.runner.calls().is_empty(), "kubeadm was called: {:?}", w.runner.argvs());
    assert!(!w.root.exists(BOOTSTRAP_SUCCESS));
    let err = w.record("kubernetes").last_error.unwrap();
    assert!(err.contains("will not reset a node that may be a member") && err.contains("`kubeadm reset -f`"), "{err}");
    err
}

#[test]
fn an_unreachable_api_server_is_no_proof_and_nothing_is_reset() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ca = ClusterCa::new();
    let w = World::new();
    kubelet(&w, &ca, ca.kubelet_client("node1.maas"));
    let started = std::time::Instant::now();
    let err = cannot_tell(&w, &format!("127.0.0.1:{port}"), &ca.hash());
    assert!(err.contains("cannot tell whether node1.maas is a member"), "{err}");
    assert!(err.contains(&format!("the API server at 127.0.0.1:{port} did not answer within 2s")), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "discovery_timeout 2s not kept");
}

#[test]
fn credentials_the_api_server_refuses_are_no_proof() {
    let (_bg, ca, server) = served(Serve::Good);
    server.register("node1.maas");
    // 401: a certificate the cluster's CA did not sign (another cluster's).
    let w = World::new();
    kubelet(&w, &ca, ClusterCa::new().kubelet_client("node1.maas"));
    let err = cannot_tell(&w, &server.addr.to_string(), &ca.hash());
    assert!(err.contains("GET /api/v1/nodes/node1.maas: 401") && err.contains("does not accept them"), "{err}");
    // 403: the cluster's CA, but not in the group the Node authorizer serves.
    let w = World::new();
    kubelet(&w, &ca, ca.client("system:node:node1.maas", "system:authenticated"));
    let err = cannot_tell(&w, &server.addr.to_string(), &ca.hash());
    assert!(err.contains("GET /api/v1/nodes/node1.maas: 403"), "{err}");
    assert_eq!(server.node_gets().iter().map(|(_, c)| *c).collect::<Vec<_>>(), [401, 403]);
}

#[test]
fn etcd_without_a_kubelet_conf_is_no_proof() {
    let w = World::new();
    w.root.write("/var/lib/etcd/member/snap/db", b"the cluster", 0o600).unwrap();
    let err = cannot_tell(&w, "127.0.0.1:6443", &format!("sha256:{}", "a".repeat(64)));
    assert!(err.contains("/var/lib/etcd/member is there but /etc/kubernetes/kubelet.conf is not"), "{err}");
    assert_eq!(w.read("/var/lib/etcd/member/snap/db"), "the cluster");
}

#[test]
fn an_unreadable_kubelet_conf_is_no_proof() {
    let w = World::new();
    w.root.write(KUBELET_CONF, b"apiVersion: v1\nkind: Config\nusers:\n- name: x\n", 0o600).unwrap();
    let err = cannot_tell(&w, "127.0.0.1:6443", &format!("sha256:{}", "a".repeat(64)));
    assert!(err.contains("reading the kubelet's credentials in /etc/kubernetes/kubelet.conf"), "{err}");
}
