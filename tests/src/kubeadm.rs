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
//! reset deletes. `token create` and `init phase upload-certs` answer as
//! kubeadm does, on stdout, only where admin.conf lets them talk to the
//! cluster, and keep what they minted under `/var/log/kubeadm/`.

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
# The value after flag $1 in the rest of the arguments.
flag() { f=$1; shift; while [ $# -gt 1 ]; do [ "$1" = "$f" ] && { echo "$2"; return; }; shift; done; }
# What talks to the cluster does it as admin.conf's user.
admin() {
  [ -f /etc/kubernetes/admin.conf ] && return
  echo "failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: no such file or directory" >&2
  exit 1
}
chars() { tr -dc 'a-z0-9' </dev/urandom | head -c "$1"; }
case "$1 $2 $3" in
"init phase upload-certs")
  admin
  # Without --config, kubeadm first asks dl.k8s.io for the stable version.
  echo 'W0101 00:00:00.000000       1 version.go:104] could not fetch a Kubernetes version from the internet: unable to get URL "https://dl.k8s.io/release/stable-1.txt"' >&2
  key=$(flag --certificate-key "$@")
  [ -n "$key" ] || key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  echo "$key" > $log/certificate-key
  echo '[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace'
  echo '[upload-certs] Using certificate key:'
  echo "$key"
  exit 0;;
"token create"*)
  admin
  case "$3" in -*|"") token="$(chars 6).$(chars 16)";; *) token=$3;; esac
  echo "$token $(flag --ttl "$@")" >> $log/tokens
  case " $* " in *" --print-join-command "*) ;; *) echo "$token"; exit 0;; esac
  # The endpoint and the CA pin come from admin.conf, as kubeadm's do.
  server=$(sed -n 's#^ *server: https://##p' /etc/kubernetes/admin.conf | head -n 1)
  sed -n 's/^ *certificate-authority-data: //p' /etc/kubernetes/admin.conf | base64 -d > $log/admin-ca.crt
  pin=$(openssl x509 -pubkey -noout -in $log/admin-ca.crt | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)
  echo "kubeadm join $server --token $token --discovery-token-ca-cert-hash sha256:$pin "
  exit 0;;
esac
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

    /// The admin.conf of a control-plane node in the cluster of `ca`, and
    /// its CA where kubeadm keeps it.
    pub fn control_plane(&self, ca: &ClusterCa, server: &str) {
        let (cert, key) = ca.client("kubernetes-admin", "kubeadm:cluster-admins");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let admin = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://{server}\n  \
             name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  name: \
             kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\nkind: Config\nusers:\n- name: \
             kubernetes-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ca.cert_pem),
            b64(&cert),
            b64(&key)
        );
        self.write("etc/kubernetes/admin.conf", &admin);
        self.write("etc/kubernetes/pki/ca.crt", &ca.cert_pem);
    }

    /// Every bootstrap token `token create` made, with its `--ttl`.
    pub fn tokens(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.path("var/log/kubeadm/tokens")).unwrap_or_default();
        text.lines().map(|l| l.split_once(' ').map(|(t, ttl)| (t.to_owned(), ttl.to_owned())).unwrap()).collect()
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
