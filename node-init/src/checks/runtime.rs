//! `runtime`: what node-init configures but never installs. The image must
//! carry containerd, kubeadm, kubelet and kubectl; kubeadm, kubelet and
//! kubectl of the configured Kubernetes minor (kubeadm refuses a control
//! plane newer than itself, and kubelet may not be newer than the API
//! server); and containerd must answer on its socket, or kubeadm's
//! preflight stops at `[ERROR CRI]`.

use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;

use super::{Check, Finding, Inputs, fail, pass, skip};
use crate::config::values::KubeVersion;
use crate::runner::Cmd;

pub const SOCKET: &str = "/run/containerd/containerd.sock";
const BIN_DIRS: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin"];
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Runtime;

#[async_trait]
impl Check for Runtime {
    fn name(&self) -> &'static str {
        "runtime"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let Some(k) = &i.config.kubernetes else { return Ok(skip("no kubernetes section")) };
        let missing: Vec<&str> = ["containerd", "kubeadm", "kubelet", "kubectl"]
            .into_iter()
            .filter(|b| !BIN_DIRS.iter().any(|d| i.root.exists(format!("{d}/{b}"))))
            .collect();
        if !missing.is_empty() {
            return Ok(fail(format!("not installed: {} (the image must carry them)", missing.join(", "))));
        }
        let mut found = Vec::new();
        let mut wrong = Vec::new();
        for argv in
            [&["kubeadm", "version", "-o", "short"][..], &["kubelet", "--version"], &["kubectl", "version", "--client"]]
        {
            let cmd = Cmd::new(argv.iter().copied(), VERSION_TIMEOUT);
            let out = i.runner.run(&cmd).await?.check(&cmd)?;
            let Some(v) = version_in(&out.stdout) else {
                anyhow::bail!("`{cmd}` printed no version: {:?}", out.stdout.trim())
            };
            match k.version {
                Some(want) if (want.major, want.minor) != (v.major, v.minor) => {
                    wrong.push(format!("{} {v} (kubernetes.version is {want})", argv[0]))
                }
                _ => found.push(format!("{} {v}", argv[0])),
            }
        }
        if !wrong.is_empty() {
            return Ok(fail(wrong.join(", ")));
        }
        let socket = i.root.path(SOCKET);
        match tokio::time::timeout(i.query_timeout, tokio::net::UnixStream::connect(&socket)).await {
            Ok(Ok(_)) => Ok(pass(format!("{}; containerd answers on {SOCKET}", found.join(", ")))),
            Ok(Err(e)) => Ok(fail(format!("containerd does not answer on {SOCKET}: {e}"))),
            Err(_) => Ok(fail(format!("containerd does not answer on {SOCKET} in time"))),
        }
    }
}

/// The first `vX.Y.Z` in a tool's version line: `v1.31.4`, `Kubernetes
/// v1.31.4`, `Client Version: v1.31.4`.
fn version_in(text: &str) -> Option<KubeVersion> {
    text.split_whitespace().find_map(|w| w.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;
    use crate::config::Config;
    use crate::testing::World;

    fn verdict(w: &World, yaml: &str) -> Finding {
        let config: Config = crate::config::parse(yaml, "t").unwrap();
        let node = w.node.clone();
        let i = Inputs::new(&w.root, &config, &node, &w.runner, Duration::from_secs(1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(Runtime.run(&i)).unwrap()
    }

    const K: &str = "kubernetes:\n  role: worker\n  endpoint: 10.0.0.1:6443\n  version: v1.31.4\n  \
                     token: abcdef.0123456789abcdef\n  ca_cert_hashes: [sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n";

    #[test]
    fn the_versions_each_tool_prints_are_read() {
        assert_eq!(version_in("v1.31.4\n").unwrap().minor, 31);
        assert_eq!(version_in("Kubernetes v1.30.2\n").unwrap().minor, 30);
        assert_eq!(version_in("Client Version: v1.29.1\nKustomize Version: v5.0.4\n").unwrap().minor, 29);
    }

    #[test]
    fn missing_tools_and_a_wrong_minor_fail_by_name() {
        let w = World::new();
        w.write("/usr/bin/containerd", "");
        w.write("/usr/bin/kubeadm", "");
        let f = verdict(&w, K);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(f.reason, "not installed: kubelet, kubectl (the image must carry them)");
        w.write("/usr/bin/kubelet", "");
        w.write("/usr/local/bin/kubectl", "");
        w.runner.answer(0, "v1.31.4\n", "");
        w.runner.answer(0, "Kubernetes v1.30.9\n", "");
        w.runner.answer(0, "Client Version: v1.31.4\n", "");
        let f = verdict(&w, K);
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert_eq!(f.reason, "kubelet v1.30.9 (kubernetes.version is v1.31.4)");
    }

    #[test]
    fn a_silent_socket_fails_and_a_listening_one_passes() {
        let w = World::new();
        for b in ["containerd", "kubeadm", "kubelet", "kubectl"] {
            w.write(&format!("/usr/bin/{b}"), "");
        }
        let answer = |w: &World| {
            w.runner.answer(0, "v1.31.4\n", "");
            w.runner.answer(0, "Kubernetes v1.31.4\n", "");
            w.runner.answer(0, "Client Version: v1.31.4\n", "");
        };
        answer(&w);
        let f = verdict(&w, K);
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert!(f.reason.starts_with("containerd does not answer on /run/containerd/containerd.sock"), "{f:?}");
        std::fs::create_dir_all(w.root.path("/run/containerd")).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(w.root.path(SOCKET)).unwrap();
        answer(&w);
        let f = verdict(&w, K);
        assert_eq!(f.status, Status::Pass, "{f:?}");
        assert!(f.reason.starts_with("kubeadm v1.31.4, kubelet v1.31.4, kubectl v1.31.4"), "{f:?}");
    }
}
