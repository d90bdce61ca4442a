//! The kubeadm double and a node root that carries it. The double is a
//! shell script at `/usr/local/bin/kubeadm` that keeps every call's argv,
//! the `--config` file and kube-vip's manifest as they were at that moment
//! under `/var/log/kubeadm/`, fails `init`/`join` as many times as
//! `/var/log/kubeadm/fail` says, and in a VM shows each call on the serial
//! console.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::rootfs::extracted;
use crate::{node_init, set_boot_id};

/// Records argv, the `--config` file and kube-vip's manifest per call;
/// fails `init`/`join` as many times as `/var/log/kubeadm/fail` says.
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
