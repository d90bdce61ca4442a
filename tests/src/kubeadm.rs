//! The kubeadm double and a node root that carries it. The double is a
//! shell script at `/usr/local/bin/kubeadm` that keeps every call's argv,
//! the `--config` file and kube-vip's manifest as they were at that moment
//! under `/var/log/kubeadm/`, fails `init`/`join` as many times as
//! `/var/log/kubeadm/fail` says, and in a VM shows each call on the serial
//! console.
//!
//! Like kubeadm, it leaves a node's files behind and takes them away: a
//! successful `init`/`join` lays down what the test put under
//! `/var/log/kubeadm/issue/` (the kubelet.conf and client certificate the
//! kubelet's TLS bootstrap would write); `reset -f` deletes what kubeadm's
//! reset deletes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::kube::ClusterCa;
use crate::rootfs::extracted;
use crate::{node_init, set_boot_id};

/// The script; see the module's doc.
const FAKE_KUBEADM: &str = r#"#!/bin/sh
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
case "$1" in
init|join)
  fails=$(cat $log/fail 2>/dev/null || echo 0)
  if [ "$fails" -gt 0 ]; then
    echo $((fails - 1)) > $log/fail
    echo "[ERROR FileAvailable]: scripted failure" >&2
    exit 1
  fi
  [ -d $log/issue ] && cp -a $log/issue/. /
  echo "kubeadm $1 done";;
reset)
  # kubeadm reset's own list (cmd/kubeadm/app/cmd/phases/reset/cleanupnode.go).
  rm -rf /etc/kubernetes/manifests/* /var/lib/kubelet/* /etc/kubernetes/pki/* /var/lib/etcd/*
  for f in admin.conf super-admin.conf kubelet.conf bootstrap-kubelet.conf controller-manager.conf scheduler.conf; do
    rm -f /etc/kubernetes/$f
  done;;
esac
exit 0
"#;

/// Puts the double at `usr/local/bin/kubeadm` under `root`, executable.
pub fn install(root: &Path) {
    let bin = root.join("usr/local/bin/kubeadm");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, FAKE_KUBEADM).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A copy of the real rootfs with the double and user data, for
/// `node-init run --root`.
pub struct Node {
    root: tempfile::TempDir,
}

impl Node {
    /// The real rootfs with the recording kubeadm, failing `fails` times,
    /// and `user_data` where cloud-init keeps it.
    pub fn new(user_data: &str, fails: u32) -> Self {
        let root = extracted();
        let r = root.path();
        install(r);
        std::fs::create_dir_all(r.join("var/log/kubeadm")).unwrap();
        std::fs::write(r.join("var/log/kubeadm/fail"), fails.to_string()).unwrap();
        let ud = r.join("var/lib/cloud/instance/user-data.txt");
        std::fs::create_dir_all(ud.parent().unwrap()).unwrap();
        std::fs::write(ud, user_data).unwrap();
        set_boot_id(r, "e2e-boot-1");
        Self { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// The root as a `--root` argument.
    pub fn arg(&self) -> String {
        self.root.path().display().to_string()
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Writes `content` at `rel` (relative to the root), creating its
    /// directories.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// What a successful `kubeadm init|join` leaves on this node: the
    /// kubelet.conf (as TLS bootstrap writes it, pointing at its client
    /// certificate) and that certificate with its key, for `name` in the
    /// cluster of `ca`.
    pub fn issue_kubelet(&self, ca: &ClusterCa, server: &str, name: &str) {
        self.kubelet_files("var/log/kubeadm/issue/", ca, server, name);
    }

    /// The same files already in place: what an earlier, interrupted run
    /// left.
    pub fn left_kubelet(&self, ca: &ClusterCa, server: &str, name: &str) {
        self.kubelet_files("", ca, server, name);
    }

    fn kubelet_files(&self, under: &str, ca: &ClusterCa, server: &str, name: &str) {
        let (cert, key) = ca.kubelet_client(name);
        let pem = "/var/lib/kubelet/pki/kubelet-client-current.pem";
        self.write(&format!("{under}{}", &pem[1..]), &(cert + &key));
        self.write(&format!("{under}etc/kubernetes/kubelet.conf"), &kubeconfig(ca, server, pem));
    }

    /// The argv of every kubeadm call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("var/log/kubeadm/argv"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `node-init run --root` into this node.
    pub fn run(&self) -> std::process::Output {
        node_init(&["run", "--root", &self.arg()])
    }
}

/// A kubelet.conf as the kubelet writes it after TLS bootstrap: the CA
/// inline, the client certificate and key in the file at `pem`.
pub fn kubeconfig(ca: &ClusterCa, server: &str, pem: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://{server}\n  \
         name: default-cluster\ncontexts:\n- context:\n    cluster: default-cluster\n    namespace: default\n    \
         user: default-auth\n  name: default-context\ncurrent-context: default-context\nkind: Config\npreferences: {{}}\n\
         users:\n- name: default-auth\n  user:\n    client-certificate: {pem}\n    client-key: {pem}\n",
        base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem)
    )
}
