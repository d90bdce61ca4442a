//! The kubernetes stage end to end: `secrets` and `userdata` make a node's
//! user data, the real rootfs takes it through the `--root` intake, and a
//! recording `kubeadm` inside the chroot keeps every call with the config
//! and the kube-vip manifest as they were at that moment. Joins discover
//! against the kube-apiserver stand-in (`src/kube.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use node_init_tests::kube::{ClusterCa, Serve, api_server};
use node_init_tests::net::Background;
use node_init_tests::*;

use crate::rootfs::extracted;

/// Records argv, the `--config` file and kube-vip's manifest per call;
/// fails `init`/`join` as many times as `/var/log/kubeadm/fail` says.
pub(crate) const FAKE_KUBEADM: &str = r#"#!/bin/sh
# In a VM, each call also shows on the serial console.
[ -w /dev/ttyS0 ] && echo "fake-kubeadm: $*" > /dev/ttyS0
log=/var/log/kubeadm
mkdir -p $log
n=$(( $(cat $log/count 2>/dev/null || echo 0) + 1 ))
echo $n > $log/count
echo "$*" >> $log/argv
if [ "$1" = version ]; then echo v1.31.4; exit 0; fi
if [ "$2" = --config ]; then cp "$3" $log/config.$n; fi
if [ -f /etc/kubernetes/manifests/kube-vip.yaml ]; then cp /etc/kubernetes/manifests/kube-vip.yaml $log/kube-vip.$n; fi
case "$1" in init|join)
  fails=$(cat $log/fail 2>/dev/null || echo 0)
  if [ "$fails" -gt 0 ]; then
    echo $((fails - 1)) > $log/fail
    echo "[ERROR FileAvailable]: scripted failure" >&2
    exit 1
  fi
  echo "kubeadm $1 done";;
esac
exit 0
"#;

struct Node {
    root: tempfile::TempDir,
}

impl Node {
    /// The real rootfs with the recording kubeadm and `user_data` where
    /// cloud-init keeps it.
    fn new(user_data: &str, fails: u32) -> Self {
        let root = extracted();
        let r = root.path();
        let bin = r.join("usr/local/bin/kubeadm");
        std::fs::write(&bin, FAKE_KUBEADM).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(r.join("var/log/kubeadm")).unwrap();
        std::fs::write(r.join("var/log/kubeadm/fail"), fails.to_string()).unwrap();
        let ud = r.join("var/lib/cloud/instance/user-data.txt");
        std::fs::create_dir_all(ud.parent().unwrap()).unwrap();
        std::fs::write(ud, user_data).unwrap();
        let boot = r.join("proc/sys/kernel/random/boot_id");
        std::fs::create_dir_all(boot.parent().unwrap()).unwrap();
        std::fs::write(boot, "e2e-boot-1\n").unwrap();
        Self { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("var/log/kubeadm/argv"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn run(&self) -> std::process::Output {
        node_init(&["run", "--root", &self.root.path().display().to_string()])
    }
}

pub(crate) struct Secrets {
    _dir: tempfile::TempDir,
    pub(crate) dir: PathBuf,
}

impl Secrets {
    pub(crate) fn new() -> Self {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cluster-secrets");
        let out = node_init(&["secrets", "--out", &dir.display().to_string()]);
        assert!(out.status.success(), "secrets: {}", text(&out.stderr));
        let s = Self { _dir: d, dir };
        // It prints the hash and the token id, never a secret.
        let printed = text(&out.stdout) + &text(&out.stderr);
        let token = s.get("token");
        assert!(printed.contains(&s.get("ca-cert-hash")) && printed.contains(&token[..6]), "{printed}");
        for secret in [&token[7..], &s.get("certificate-key"), "PRIVATE KEY"] {
            assert!(!printed.contains(secret), "secrets printed a secret: {printed}");
        }
        s
    }

    pub(crate) fn get(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap().trim_end().to_owned()
    }

    fn arg(&self) -> String {
        self.dir.display().to_string()
    }
}

pub(crate) fn userdata(role: &str, cluster_yaml: &str, secrets: &Secrets) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, cluster_yaml).unwrap();
    let out = node_init(&[
        "userdata",
        "--role",
        role,
        "--config",
        &cluster.display().to_string(),
        "--secrets",
        &secrets.arg(),
    ]);
    assert!(out.status.success(), "userdata --role {role}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

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
    assert!(ud.starts_with("#cloud-config\n") && ud.contains("path: /etc/node-init/config.yaml"), "{ud}");
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
    let status = node_init(&["status", "--root", &node.root.path().display().to_string(), "--output", "json"]);
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
    let ca = ClusterCa::from_pem(&s.get("ca.crt"), &std::fs::read_to_string(s.dir.join("ca.key")).unwrap());
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
