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
use std::path::Path;

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

#[test]
fn the_kubeadm_and_kubelet_doubles_are_scripts_sh_can_parse() {
    let dir = tempfile::tempdir().unwrap();
    node_init_tests::kubeadm::install(dir.path());
    node_init_tests::kubelet::install(dir.path());
    for script in ["usr/local/bin/kubeadm", "usr/bin/kubelet"] {
        let out = output(std::process::Command::new("sh").arg("-n").arg(dir.path().join(script)));
        assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    }
}

/// The kubelet double as systemd starts it, through kubeadm's drop-in.
fn kubelet(node: &Node) -> std::process::Output {
    let argv = [
        "/usr/bin/kubelet",
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
    ];
    output(&mut node_init_tests::rootfs::chroot(&node.path(""), &argv))
}

#[test]
fn the_kubelet_double_refuses_until_kubeadm_configures_it_and_refuses_swap() {
    let node = Node::new("#cloud-config\n", 0);
    node_init_tests::kubelet::install(&node.path(""));
    let unit = node.read("usr/lib/systemd/system/kubelet.service");
    assert!(unit.contains("Restart=always\n") && unit.contains("RestartSec=10\n"), "{unit}");
    let link = node.path("etc/systemd/system/multi-user.target.wants/kubelet.service");
    assert_eq!(std::fs::read_link(link).unwrap(), Path::new("/usr/lib/systemd/system/kubelet.service"));
    let version = output(&mut node_init_tests::rootfs::chroot(&node.path(""), &["kubelet", "--version"]));
    assert_eq!(text(&version.stdout), "Kubernetes v1.31.4\n");

    // Before kubeadm: no config, so systemd restarts it every 10 s.
    let out = kubelet(&node);
    assert_eq!(out.status.code(), Some(1));
    let want = r#""command failed" err="failed to load kubelet config file, path: /var/lib/kubelet/config.yaml, error: failed to load Kubelet config file /var/lib/kubelet/config.yaml, error failed to read kubelet config file \"/var/lib/kubelet/config.yaml\", error: open /var/lib/kubelet/config.yaml: no such file or directory""#;
    assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    node.write(
        "var/lib/kubelet/config.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n",
    );
    let out = kubelet(&node);
    assert_eq!(out.status.code(), Some(1));
    let want =
        "unable to load bootstrap kubeconfig: stat /etc/kubernetes/bootstrap-kubelet.conf: no such file or directory";
    assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    // Configured, with curtin's swap file on: failSwapOn is the kubelet's default.
    node.write("etc/kubernetes/bootstrap-kubelet.conf", "apiVersion: v1\nkind: Config\n");
    node.write("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/swap.img\tfile\t4194300\t0\t-2\n");
    let out = kubelet(&node);
    assert_eq!(out.status.code(), Some(1));
    let want = "failed to run Kubelet: running with swap on is not supported, please disable swap! or set --fail-swap-on \
                flag to false. /proc/swaps contained: [Filename\tType\tSize\tUsed\tPriority /swap.img\tfile\t4194300\t0\t-2]";
    assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
}

/// A worker's JoinConfiguration for the endpoint `server`, with a short
/// kubelet health check.
fn join_config(server: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    \
         apiServerEndpoint: {server}\n    token: abcdef.0123456789abcdef\n  tlsBootstrapToken: abcdef.0123456789abcdef\n\
         nodeRegistration:\n  name: \"node2.maas\"\n  kubeletExtraArgs:\n  - name: node-ip\n    value: \"10.11.12.5\"\n\
         timeouts:\n  discovery: 10s\n  kubeletHealthCheck: 1s\n"
    )
}

#[test]
fn on_a_systemd_host_the_kubeadm_double_fails_preflight_with_kubeadms_words() {
    let node = Node::new("#cloud-config\n", 0);
    node.booted_host();
    node.write("etc/node-init/kubeadm.yaml", &join_config("10.11.12.100:6443"));
    std::fs::remove_file(node.path("usr/local/bin/e2e-cri-pull")).unwrap();
    std::fs::remove_file(node.path("proc/sys/net/bridge/bridge-nf-call-iptables")).unwrap();
    node.write("proc/sys/net/ipv4/ip_forward", "0\n");
    node.write("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/swap.img\tfile\t4194300\t0\t-2\n");
    node.write("etc/kubernetes/kubelet.conf", "");
    // Something listens on 0.0.0.0:10250.
    node.write(
        "proc/net/tcp",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
         0: 00000000:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n",
    );
    let out = node.kubeadm(&["join", "--config", "/etc/node-init/kubeadm.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "[preflight] Running pre-flight checks\n");
    let want = "\t[WARNING Swap]: swap is supported for cgroup v2 only. The kubelet must be properly configured to use \
                swap. Please refer to https://kubernetes.io/docs/concepts/architecture/nodes/#swap-memory, or disable \
                swap on the node\n\
                error execution phase preflight: [preflight] Some fatal errors occurred:\n\
                \t[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists\n\
                \t[ERROR CRI]: container runtime is not running: /usr/local/bin/e2e-cri-pull, the CRI client, is missing\n\
                \t[ERROR Port-10250]: Port 10250 is in use\n\
                \t[ERROR FileContent--proc-sys-net-bridge-bridge-nf-call-iptables]: \
                /proc/sys/net/bridge/bridge-nf-call-iptables does not exist\n\
                \t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1\n\
                [preflight] If you know what you are doing, you can make a check non-fatal with \
                `--ignore-preflight-errors=...`\nTo see the stack trace of this error execute with --v=5 or higher\n";
    assert_eq!(text(&out.stderr), want);
    let systemctl = node.read("var/log/systemctl");
    assert!(
        !systemctl.contains("stop") && !systemctl.contains("restart"),
        "preflight touched the kubelet: {systemctl}"
    );
}

#[test]
fn on_a_systemd_host_the_kubeadm_double_restarts_the_kubelet_blocking_then_waits_for_it() {
    let s = Secrets::new();
    let ca = s.cluster_ca();
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &ca, &s.get("token"), Serve::Good);
    let node = Node::new("#cloud-config\n", 0);
    node.booted_host();
    node.write("etc/node-init/kubeadm.yaml", &join_config(&api.addr.to_string()));
    node.issue_kubelet(&ca, &api.addr.to_string(), "node2.maas");
    let join = ["join", "--config", "/etc/node-init/kubeadm.yaml"];

    // Nothing serves the kubelet's healthz: kubeadm gives up after
    // timeouts.kubeletHealthCheck, and the bootstrap kubeconfig goes.
    let out = node.kubeadm(&join);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[kubelet-start] Starting the kubelet\n[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 1s\n[kubelet-check] The kubelet is not healthy after "), "{stdout}");
    let want = "error execution phase kubelet-start: The HTTP call equal to 'curl -sSL http://127.0.0.1:10248/healthz' \
                returned error: Get \"http://127.0.0.1:10248/healthz\": context deadline exceeded\n";
    assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    assert_eq!(
        node.read("var/log/systemctl")
            .lines()
            .filter(|l| !l.starts_with("status") && !l.starts_with("is-"))
            .collect::<Vec<_>>(),
        ["daemon-reload", "stop kubelet", "daemon-reload", "restart kubelet"]
    );
    assert!(!node.path("etc/kubernetes/bootstrap-kubelet.conf").exists());
    let config = node.read("var/lib/kubelet/config.yaml");
    assert!(config.contains("cgroupDriver: systemd\n") && config.contains("clusterDNS:\n- 10.96.0.10\n"), "{config}");
    assert!(!config.contains("failSwapOn"), "kubeadm leaves failSwapOn to the kubelet's default: {config}");
    let hostname = run(std::process::Command::new("uname").arg("-n")).trim().to_lowercase();
    let override_ = if hostname == "node2.maas" { "" } else { " --hostname-override=node2.maas" };
    assert_eq!(
        node.read("var/lib/kubelet/kubeadm-flags.env"),
        format!(
            "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock\
             {override_} --node-ip=10.11.12.5 --pod-infra-container-image=registry.k8s.io/pause:3.10\"\n"
        )
    );
    // A worker pulls nothing; the CRI was only asked whether it runs.
    assert_eq!(node.read("var/log/cri-pull"), "--status\n");

    // The kubelet answers: the join goes on to the TLS bootstrap, whose
    // kubelet.conf is what the test issued.
    let healthz = std::net::TcpListener::bind("127.0.0.1:10248").expect("127.0.0.1:10248 is taken");
    std::thread::spawn(move || {
        for conn in healthz.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0; 1024];
            let _ = std::io::Read::read(&mut c, &mut buf);
            let _ = std::io::Write::write_all(
                &mut c,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
        }
    });
    let out = node.kubeadm(&join);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[kubelet-check] The kubelet is healthy after "), "{stdout}");
    assert!(stdout.contains("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap\n"), "{stdout}");
    assert!(stdout.contains("This node has joined the cluster:\n"), "{stdout}");
    assert!(node.path("etc/kubernetes/kubelet.conf").exists());
    assert!(!node.path("etc/kubernetes/bootstrap-kubelet.conf").exists());
}

#[test]
fn on_a_systemd_host_kubeadm_init_pulls_kubeadms_images_through_the_cri_and_fails_as_kubeadm_does() {
    let node = Node::new("#cloud-config\n", 0);
    node.booted_host();
    node.write(
        "etc/node-init/kubeadm.yaml",
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  bindPort: 6443\n---\n\
         apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.31.4\n\
         imageRepository: mirror.example/k8s\n",
    );
    node.write("var/log/cri-pull.fail", "mirror.example/k8s/etcd:3.5.15-0\n");
    // Pulled before (by node-init, ahead of kubeadm): IfNotPresent skips it.
    node.write("var/log/cri-pull.present", "mirror.example/k8s/pause:3.10\n");
    let out = node.kubeadm(&["init", "--config", "/etc/node-init/kubeadm.yaml", "--upload-certs"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let images = [
        "mirror.example/k8s/kube-apiserver:v1.31.4",
        "mirror.example/k8s/kube-controller-manager:v1.31.4",
        "mirror.example/k8s/kube-scheduler:v1.31.4",
        "mirror.example/k8s/kube-proxy:v1.31.4",
        // Only registry.k8s.io nests CoreDNS under coredns/.
        "mirror.example/k8s/coredns:v1.11.3",
    ];
    let mut want: Vec<String> = vec!["--status".into()];
    for image in images {
        want.extend([format!("--present {image}"), image.to_owned()]);
    }
    want.push("--present mirror.example/k8s/pause:3.10".into());
    // PullImageRetry: five tries.
    want.push("--present mirror.example/k8s/etcd:3.5.15-0".into());
    want.extend(std::iter::repeat_n("mirror.example/k8s/etcd:3.5.15-0".to_owned(), 5));
    assert_eq!(node.read("var/log/cri-pull").lines().collect::<Vec<_>>(), want);
    let err = text(&out.stderr);
    let line = "\t[ERROR ImagePull]: failed to pull image mirror.example/k8s/etcd:3.5.15-0: failed to pull image \
                mirror.example/k8s/etcd:3.5.15-0: rpc error: code = NotFound desc = failed to pull and unpack image \
                \"mirror.example/k8s/etcd:3.5.15-0\"\n";
    assert!(
        err.starts_with("error execution phase preflight: [preflight] Some fatal errors occurred:\n")
            && err.contains(line),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("[kubelet-start]"), "{}", text(&out.stdout));
}
