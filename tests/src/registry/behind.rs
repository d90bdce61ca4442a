//! The registry as a node behind an intercepting proxy meets it: a network
//! namespace whose only way out is the proxy (no default route, and a
//! resolv.conf naming the namespace's own loopback, where nothing
//! answers), the proxy on the host's side sending the named hosts to the
//! registry under its own CA, and a bundle holding that CA for
//! containerd's `SSL_CERT_FILE`. Containerds started here get the proxy
//! and the bundle in their environment, as node-init's drop-in and trust
//! store give them on a node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Containerd, Registry, install_cri_pull};
use crate::kube::ClusterCa;
use crate::net::{Background, Netns, intercepting_proxy_routes};
use crate::{output, text};

pub struct Behind {
    // Dropped in this order: the namespace before the proxy it reaches.
    pub ns: Netns,
    pub bg: Background,
    pub registry: Registry,
    /// The proxy's URL, `http://ADDR`.
    pub proxy: String,
    /// "CONNECT host:port" per tunnel the proxy opened.
    pub proxy_log: Arc<Mutex<Vec<String>>>,
    /// The system's bundle and the proxy's CA, for SSL_CERT_FILE.
    pub bundle: PathBuf,
    /// The CRI client kubeadm's double uses, on this host.
    pub cri_pull: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Behind {
    /// The proxy sends each of `hosts` to the registry, which is empty.
    pub fn routing(hosts: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::start(&dir.path().join("registry"));
        let ns = Netns::new();
        ns.ip(&["route", "del", "default"]);
        std::fs::write(ns.etc().join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
        let bg = Background::new();
        let ca = ClusterCa::named("node-init e2e intercepting proxy CA");
        let (proxy, proxy_log) = intercepting_proxy_routes(
            &bg,
            (ns.host_ip, 0).into(),
            &ca.cert_pem,
            &ca.key_pem,
            hosts.iter().map(|h| ((*h).to_owned(), registry.addr())).collect(),
        );
        let bundle = dir.path().join("ca-certificates.crt");
        let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
        std::fs::write(&bundle, format!("{system}{}", ca.cert_pem)).expect("bundle");
        let cri_pull = install_cri_pull(&dir.path().join("root"));
        let proxy = format!("http://{proxy}");
        Self { ns, bg, registry, proxy, proxy_log, bundle, cri_pull, dir }
    }

    /// A containerd in the namespace under `dir` (its socket
    /// `dir/containerd.sock`), with the proxy and the bundle, once its CRI
    /// answers.
    pub fn containerd(&self, dir: &Path) -> Containerd {
        let bundle = self.bundle.display().to_string();
        self.containerd_with(dir, &[("HTTPS_PROXY", &self.proxy), ("SSL_CERT_FILE", &bundle)])
    }

    /// A containerd in the namespace under `dir` with `env` only, once its
    /// CRI answers.
    pub fn containerd_with(&self, dir: &Path, env: &[(&str, &str)]) -> Containerd {
        let containerd = Containerd::start(&self.ns, dir, env);
        self.wait_status(&containerd);
        containerd
    }

    /// Polls `e2e-cri-pull --status` (kubeadm's CRI preflight) for 20 s:
    /// the CRI plugin answers once it has initialised.
    fn wait_status(&self, containerd: &Containerd) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = output(Command::new(&self.cri_pull).args(["--socket", &containerd.endpoint(), "--status"]));
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI did not answer Status in 20 s: {}\n{}",
                text(&out.stderr),
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether `containerd` has `image`, asked through its CRI.
    pub fn present(&self, containerd: &Containerd, image: &str) -> bool {
        output(Command::new(&self.cri_pull).args(["--socket", &containerd.endpoint(), "--present", image]))
            .status
            .success()
    }

    pub fn proxied(&self) -> Vec<String> {
        self.proxy_log.lock().expect("proxy log").clone()
    }
}
