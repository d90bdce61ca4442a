//! The distribution registry (Debian's `docker-registry`) the VM tier's
//! images come from, the images it serves, and the CRI client the guest's
//! doubles pull with.
//!
//! [`Registry`] is the real registry on 127.0.0.1, storing under a
//! directory of the test's; [`Registry::push`] builds a single-layer image
//! and uploads it through the registry's own v2 API, as `docker push` does,
//! so what containerd later fetches is exactly what a registry serves.
//! The registry answers for every host's names: the intercepting proxy
//! sends `registry.k8s.io` and `ghcr.io` alike to it, so an image is
//! pushed under its path without the host.
//!
//! [`Behind`] puts it behind an intercepting proxy, reached from a
//! namespace, with containerds that pull through the proxy.
//!
//! [`kubernetes_images`] is the list kubeadm v1.31 pulls, read from its
//! source; [`CRI_PULL`] pulls through containerd's CRI as kubeadm does.

mod behind;
mod containerd;
mod cri;
mod http;
mod image;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use behind::Behind;
pub use containerd::Containerd;
pub use cri::{CRI_PULL, install_cri_pull};

/// kube-vip's image as node-init deploys it by default
/// (node-init/src/config/mod.rs `KUBE_VIP_IMAGE`).
pub const KUBE_VIP: &str = "ghcr.io/kube-vip/kube-vip:v0.8.10";

/// The images `kubeadm config images pull` (and `kubeadm init`'s preflight)
/// pulls for a v1.31 `version` from `repository`, in kubeadm's order, as
/// `GetControlPlaneImages` in cmd/kubeadm/app/images/images.go builds them:
/// kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy at
/// the version (`+` becomes `_`, `KubernetesVersionToImageTag`); CoreDNS
/// `CoreDNSVersion` v1.11.3, under `<repository>/coredns/coredns` only for
/// the default repository registry.k8s.io (`GetDNSImage` renames the
/// official image) and `<repository>/coredns` for any other; pause
/// `PauseVersion` 3.10; etcd 3.5.15-0, `SupportedEtcdVersion[31]` in
/// cmd/kubeadm/app/constants/constants.go of the v1.31 releases (the
/// cherry-picks to 3.5.16 and 3.5.21, kubernetes#127955 and #131959, were
/// closed unmerged). kubeadm takes etcd's tag from its own table, so the
/// binary's minor, not only `version`'s, decides it; a CI version
/// (`ci/...`) and the kubeadm config's per-image overrides are left out.
pub fn kubernetes_images(version: &str, repository: &str) -> Vec<String> {
    assert!(
        version.starts_with("v1.31."),
        "{version}: this is kubeadm v1.31's list; read kubeadm's source for another minor"
    );
    let tag = version.replace('+', "_");
    let dns = if repository == "registry.k8s.io" { format!("{repository}/coredns") } else { repository.to_owned() };
    let mut images: Vec<String> = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"]
        .iter()
        .map(|component| format!("{repository}/{component}:{tag}"))
        .collect();
    images.push(format!("{dns}/coredns:v1.11.3"));
    images.push(format!("{repository}/pause:3.10"));
    images.push(format!("{repository}/etcd:3.5.15-0"));
    images
}

/// About what the image weighs on the wire (its compressed linux/amd64
/// layers, as the registry's manifests list them): what a node behind a
/// proxy really fetches at its first boot, 193 MiB for a control-plane
/// node's eight. Unknown names weigh 1 MiB.
pub fn wire_size(reference: &str) -> usize {
    const MIB: f64 = 1024.0 * 1024.0;
    let (name, _) = split_reference(reference);
    let mib = match name.rsplit('/').next().unwrap_or(&name) {
        "kube-apiserver" => 27.9,
        "kube-controller-manager" => 26.2,
        "kube-scheduler" => 20.1,
        "kube-proxy" => 30.1,
        "coredns" => 17.3,
        "pause" => 0.3,
        "etcd" => 56.9,
        "kube-vip" => 14.6,
        _ => 1.0,
    };
    (mib * MIB) as usize
}

/// A reference split as containerd's `docker.ParseDockerRef` reads it: the
/// first component is a host when it holds a `.` or a `:` or is
/// `localhost`; a reference without a tag is `latest`. Returns the
/// repository path without the host, and the tag.
pub fn split_reference(reference: &str) -> (String, String) {
    let path = match reference.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => reference,
    };
    let (name, tag) = match path.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (path, "latest"),
    };
    (name.to_owned(), tag.to_owned())
}

/// `docker-registry serve` on 127.0.0.1 with a port of its own choosing,
/// storing under `DIR/storage`; its log in `DIR/registry.log`, its access
/// log (one Apache combined line per request) in `DIR/access.log`. Killed
/// when dropped.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Registry {
    /// Starts the registry and waits, up to 20 s, for `GET /v2/` to answer
    /// 200.
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let config = dir.join("config.yml");
        std::fs::write(&config, config_yml(&dir.join("storage"))).expect("writing the registry's config");
        let file = |name: &str| std::fs::File::create(dir.join(name)).expect("creating a registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .env_clear()
            .env("PATH", crate::PATH)
            .stdin(Stdio::null())
            .stdout(file("access.log"))
            .stderr(file("registry.log"))
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let mut registry = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), dir: dir.to_owned() };
        registry.addr = registry.wait_ready(Instant::now() + Duration::from_secs(20));
        registry
    }

    /// The address it listens on, which the proxy's routes point to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// "METHOD PATH STATUS" per request served, in order, from the access
    /// log (query strings kept).
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines().filter_map(access_line).collect()
    }

    /// The `GET`s and `HEAD`s of `name`'s manifests and blobs, as
    /// "METHOD PATH STATUS": what a puller fetched (or tried), without the
    /// push's uploads.
    pub fn fetched(&self, name: &str) -> Vec<String> {
        let under = format!("/v2/{name}/");
        let fetch = |r: &&String| {
            r.split_once(' ').is_some_and(|(m, rest)| (m == "GET" || m == "HEAD") && rest.starts_with(&under))
        };
        self.requests().iter().filter(fetch).cloned().collect()
    }

    /// Whether the registry answered a `GET` of `name`'s manifest for
    /// `reference` (a tag or a digest) with 200: containerd resolves a tag
    /// with a `HEAD`, then fetches the manifest by digest.
    pub fn served_manifest(&self, name: &str, reference: &str) -> bool {
        let want = format!("GET /v2/{name}/manifests/{reference} 200");
        self.requests().contains(&want)
    }

    /// The registry's own log, for a failing assertion's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Builds a single-layer linux/amd64 image whose layer holds
    /// `layer_bytes` random bytes and pushes it as `name:tag` (a path
    /// without a host); returns the manifest's digest.
    pub fn push(&self, name: &str, tag: &str, layer_bytes: usize) -> String {
        image::push(self.addr, name, tag, &image::Image::build(name, layer_bytes))
    }

    /// Pushes one such image per reference, under its path without the
    /// host; returns the manifests' digests in order.
    pub fn push_all(&self, references: &[String], layer_bytes: usize) -> Vec<String> {
        references
            .iter()
            .map(|reference| {
                let (name, tag) = split_reference(reference);
                self.push(&name, &tag, layer_bytes)
            })
            .collect()
    }

    /// Pushes one image per reference weighing what the real one does
    /// ([`wire_size`]); returns the manifests' digests in order.
    pub fn push_real_sizes(&self, references: &[String]) -> Vec<String> {
        references
            .iter()
            .map(|reference| {
                let (name, tag) = split_reference(reference);
                self.push(&name, &tag, wire_size(reference))
            })
            .collect()
    }

    /// Reads the bound address from the log's "listening on", then polls
    /// `GET /v2/`; the registry's log is in the panic if it never answers.
    fn wait_ready(&mut self, deadline: Instant) -> SocketAddr {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", self.log());
            }
            let listening = self.log().lines().find_map(|l| {
                let rest = &l[l.find("listening on ")? + "listening on ".len()..];
                rest.split('"').next()?.parse::<SocketAddr>().ok()
            });
            if let Some(addr) = listening
                && http::exchange(addr, "GET", "/v2/", &[], &[]).is_ok_and(|r| r.status == 200)
            {
                return addr;
            }
            assert!(Instant::now() < deadline, "docker-registry not ready in 20 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry's configuration: filesystem storage, deletes allowed (so a
/// test may remove an image), its own choice of port on loopback, and the
/// access log on.
fn config_yml(storage: &Path) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:0\n  secret: node-init-tests\n",
        storage.display()
    )
}

/// "METHOD PATH STATUS" from one combined-format line:
/// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`.
fn access_line(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(" \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut request = request.split_whitespace();
    let (method, path) = (request.next()?, request.next()?);
    let status = rest.split_whitespace().next()?;
    Some(format!("{method} {path} {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_v1_31_pulls_seven_images_with_coredns_renamed_only_on_the_default_repository() {
        assert_eq!(
            kubernetes_images("v1.31.4", "registry.k8s.io"),
            [
                "registry.k8s.io/kube-apiserver:v1.31.4",
                "registry.k8s.io/kube-controller-manager:v1.31.4",
                "registry.k8s.io/kube-scheduler:v1.31.4",
                "registry.k8s.io/kube-proxy:v1.31.4",
                "registry.k8s.io/coredns/coredns:v1.11.3",
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/etcd:3.5.15-0",
            ]
        );
        let mirror = kubernetes_images("v1.31.4", "mirror.example:5000/k8s");
        assert!(mirror.contains(&"mirror.example:5000/k8s/coredns:v1.11.3".to_owned()), "{mirror:?}");
    }

    #[test]
    fn a_reference_loses_its_host_as_containerd_splits_it() {
        let split = |r| split_reference(r);
        assert_eq!(split("registry.k8s.io/coredns/coredns:v1.11.3"), ("coredns/coredns".into(), "v1.11.3".into()));
        assert_eq!(split(KUBE_VIP), ("kube-vip/kube-vip".into(), "v0.8.10".into()));
        assert_eq!(split("localhost:5000/pause"), ("pause".into(), "latest".into()));
        assert_eq!(split("library/busybox:1.36"), ("library/busybox".into(), "1.36".into()));
    }

    #[test]
    fn an_access_log_line_reads_as_method_path_status() {
        let line = "127.0.0.1 - - [21/Nov/2026:20:48:53 +0000] \"HEAD /v2/x/manifests/1 HTTP/1.1\" 404 91 \"\" \"curl/7.88.1\"";
        assert_eq!(access_line(line).as_deref(), Some("HEAD /v2/x/manifests/1 404"));
    }
}
