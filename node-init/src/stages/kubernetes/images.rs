//! The images the node will run, in containerd before kubeadm is called:
//! on a control-plane node every image `kubeadm config images list` names
//! for the version and repository, plus kube-vip's where it announces the
//! VIP; on a worker the two a worker always runs, the sandbox (`pause`)
//! and `kube-proxy`. (kubeadm itself pulls nothing for a worker, whose
//! kubelet then pulls them after the join; a fleet's workers never need
//! etcd or the API server's image.)
//!
//! Each image is asked of containerd's CRI first (`ImageStatus`, as
//! kubeadm's `IfNotPresent` and the kubelet do) and pulled only when
//! missing, so a rerun, or the run after the patch's reboot, pulls only
//! what is not there yet; containerd resumes a layer a killed pull left
//! half-fetched. Pulls go three at a time, each image tried
//! [`ATTEMPTS`] times with jittered backoff (a patch that restarts
//! containerd interrupts a pull; each try first waits for its socket, up to
//! [`SOCKET_WAIT`]), each bounded by [`PULL_TIMEOUT`].
//! Every image that still fails is named, with containerd's own error.
//!
//! Under `--root` nothing is pulled unless a containerd answers on the
//! root's own socket: an image is pulled into on the node that boots it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures_util::future::join_all;
use tokio::time::Instant;

use crate::config::values::KubeVersion;
use crate::config::{DEFAULT_IMAGE_REPOSITORY, Kubernetes, Role};
use crate::cri::{Cri, status_error};
use crate::retry::Backoff;
use crate::runner::Cmd;
use crate::stages::host::live::{SOCKET, SOCKET_WAIT};
use crate::stages::{Context, Details, Done};

/// Tries per image: 2 s, then 4 s (with jitter) between them.
pub const ATTEMPTS: Backoff = Backoff { first: Duration::from_secs(2), max: Duration::from_secs(20), attempts: 3 };
/// One try of one image: hundreds of MB through a proxy can take minutes.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Images pulled at once.
const AT_ONCE: usize = 3;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// The images this node will run, in kubeadm's order, kube-vip's last.
pub async fn wanted(cx: &Context<'_>, k: &Kubernetes, v: KubeVersion) -> Result<Vec<String>> {
    let repo = k.image_repository.as_ref().map_or(DEFAULT_IMAGE_REPOSITORY, |r| r.0.as_str());
    let version = v.to_string();
    let argv = ["kubeadm", "config", "images", "list", "--kubernetes-version", &version, "--image-repository", repo];
    let cmd = Cmd::new(argv, LIST_TIMEOUT);
    let out = cx.runner.run(&cmd).await.and_then(|o| o.check(&cmd)).context("listing the images kubeadm needs")?;
    let listed: Vec<String> = out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if listed.is_empty() {
        bail!("`{cmd}` listed no images");
    }
    Ok(select(listed, k))
}

/// What of kubeadm's list the node's role runs, plus kube-vip's image.
pub fn select(listed: Vec<String>, k: &Kubernetes) -> Vec<String> {
    let mut images: Vec<String> = match k.role() {
        Role::Worker => listed.into_iter().filter(|i| matches!(name_of(i), "pause" | "kube-proxy")).collect(),
        _ => listed,
    };
    if k.role() != Role::Worker
        && let Some(vip) = &k.vip
        && !images.contains(&vip.image)
    {
        images.push(vip.image.clone());
    }
    images
}

/// `pause` of `registry.k8s.io/pause:3.10`, `coredns` of
/// `registry.k8s.io/coredns/coredns:v1.11.3`.
fn name_of(image: &str) -> &str {
    let last = name_and_tag(image.split('@').next().unwrap_or(image));
    last.split(':').next().unwrap_or(last)
}

/// Makes sure containerd has every image the node will run; the stage's
/// details say which were there and which were pulled.
pub async fn ensure(cx: &Context<'_>, k: &Kubernetes, v: Option<KubeVersion>) -> Result<Done> {
    let socket = cx.root.path(SOCKET);
    let mut details = Details::new();
    if !cx.root.is_host()
        && let Err(e) = Cri::connect(&socket, CALL_TIMEOUT).await
    {
        tracing::info!(reason = %format!("{e:#}"), "images left for the booted node (--root)");
        details.insert("images".into(), "left for the booted node (--root, no containerd answers)".into());
        return Ok(Done::new(details));
    }
    let version = match v {
        Some(v) => v,
        None => super::kubeadm_version(cx).await?,
    };
    let images = wanted(cx, k, version).await?;
    if cx.dry_run {
        cx.note(format!("would pull what containerd lacks of: {}", images.join(", ")));
        return Ok(Done::new(details));
    }
    let started = Instant::now();
    let socket = socket.as_path();
    let gate = &tokio::sync::Semaphore::new(AT_ONCE);
    let shown = &Shown::new(cx, images.len());
    let results: Vec<(String, Result<Got>)> = join_all(images.iter().cloned().map(|image| async move {
        let _turn = gate.acquire().await;
        shown.asking(&image);
        let got = one(socket, &image).await;
        shown.answered(&image, got.is_ok());
        (image, got)
    }))
    .await;
    let mut present = Vec::new();
    let mut pulled = Vec::new();
    let mut failed = Vec::new();
    for (image, r) in results {
        match r {
            Ok(Got::Present) => present.push(image),
            Ok(Got::Pulled) => pulled.push(image),
            Err(e) => failed.push(format!("{image}: {e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!("containerd could not pull {} of {} images: {}", failed.len(), images.len(), failed.join("; "));
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        present = present.len(),
        pulled = pulled.len(),
        seconds = format!("{secs:.1}"),
        "images in containerd"
    );
    let mut images_detail = serde_json::Map::new();
    images_detail.insert("present".into(), present.into());
    images_detail.insert("pulled".into(), pulled.into());
    images_detail.insert("seconds".into(), ((secs * 10.0).round() / 10.0).into());
    details.insert("images".into(), images_detail.into());
    Ok(Done::new(details))
}

/// How far the images are, shown to `status` while the work is ahead of
/// its turn: "5/8 in containerd; pulling etcd:3.5.15-0, pause:3.10".
struct Shown<'c, 'a> {
    cx: &'c Context<'a>,
    total: usize,
    now: std::sync::Mutex<(usize, Vec<String>)>,
}

impl<'c, 'a> Shown<'c, 'a> {
    fn new(cx: &'c Context<'a>, total: usize) -> Self {
        Self { cx, total, now: Default::default() }
    }

    fn asking(&self, image: &str) {
        self.update(|(_, asking)| asking.push(name_and_tag(image).to_owned()));
    }

    fn answered(&self, image: &str, present: bool) {
        self.update(|(have, asking)| {
            if let Some(i) = asking.iter().position(|i| i == name_and_tag(image)) {
                asking.remove(i);
            }
            *have += usize::from(present);
        });
    }

    fn update(&self, f: impl FnOnce(&mut (usize, Vec<String>))) {
        let Some(ahead) = self.cx.ahead() else { return };
        let mut now = self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut now);
        let (have, asking) = &*now;
        let mut line = format!("{have}/{} in containerd", self.total);
        if !asking.is_empty() {
            line += &format!("; pulling {}", asking.join(", "));
        }
        ahead.progress("images", line);
    }
}

/// An image reference without its registry and repository path:
/// `etcd:3.5.15-0`.
fn name_and_tag(image: &str) -> &str {
    image.rsplit('/').next().unwrap_or(image)
}

enum Got {
    Present,
    Pulled,
}

/// One image: present, or pulled within [`ATTEMPTS`] tries.
async fn one(socket: &Path, image: &str) -> Result<Got> {
    let deadline = Instant::now() + (SOCKET_WAIT + PULL_TIMEOUT + ATTEMPTS.max) * ATTEMPTS.attempts;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let err = match try_once(socket, image).await {
            Ok(got) => return Ok(got),
            Err(e) => e,
        };
        tracing::warn!(image, attempt, error = %format!("{err:#}"), "pulling through containerd failed");
        if !ATTEMPTS.wait(attempt, deadline).await {
            return Err(err.context(format!("after {attempt} tries")));
        }
    }
}

async fn try_once(socket: &Path, image: &str) -> Result<Got> {
    let cri = connected(socket).await?;
    if cri.present(image, CALL_TIMEOUT).await.map_err(|s| status_error(socket, "ImageStatus", &s))?.is_some() {
        tracing::debug!(image, "already in containerd");
        return Ok(Got::Present);
    }
    let started = Instant::now();
    tracing::info!(image, "pulling through containerd");
    let image_ref = cri.pull(image, PULL_TIMEOUT).await.map_err(|s| status_error(socket, "PullImage", &s))?;
    tracing::info!(image, image_ref, seconds = format!("{:.1}", started.elapsed().as_secs_f64()), "pulled");
    Ok(Got::Pulled)
}

/// A connection to containerd, waited for up to [`SOCKET_WAIT`]: the patch
/// beside the pulls may be upgrading and restarting containerd.
async fn connected(socket: &Path) -> Result<Cri> {
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        match Cri::connect(socket, CALL_TIMEOUT).await {
            Ok(cri) => return Ok(cri),
            Err(e) if Instant::now() >= deadline => {
                return Err(
                    e.context(format!("containerd did not answer for {}", humantime::format_duration(SOCKET_WAIT)))
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(yaml: &str) -> Kubernetes {
        crate::config::parse(yaml, "t").unwrap().kubernetes.unwrap()
    }

    #[test]
    fn a_worker_pulls_the_sandbox_and_kube_proxy_and_a_control_plane_node_everything_and_kube_vip() {
        // What `kubeadm config images list` prints for v1.31.4.
        let listed = || node_init_tests::registry::kubernetes_images("v1.31.4", "registry.k8s.io");
        let join = |role: &str, extra: &str| {
            format!(
                "kubernetes:\n  role: {role}\n  endpoint: 10.11.12.100:6443\n  version: v1.31.4\n  \
                 token: abcdef.0123456789abcdef\n  ca_cert_hashes: [sha256:{}]\n{extra}",
                "ab".repeat(32)
            )
        };
        let worker = k(&join("worker", ""));
        assert_eq!(select(listed(), &worker), ["registry.k8s.io/kube-proxy:v1.31.4", "registry.k8s.io/pause:3.10"]);
        let cp = k(&join("control-plane", &format!("  certificate_key: {}\n  vip: {{}}\n", "0f".repeat(32))));
        let images = select(listed(), &cp);
        assert_eq!(&images[..7], &listed()[..]);
        assert_eq!(images.len(), 8, "{images:?}");
        assert!(images[7].contains("kube-vip"), "{images:?}");
        assert_eq!(name_of("registry.k8s.io/coredns/coredns:v1.11.3"), "coredns");
        assert_eq!(name_of("mirror.example:5000/k8s/pause@sha256:ab"), "pause");
    }
}
