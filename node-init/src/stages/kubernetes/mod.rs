//! Stage `kubernetes`: join the cluster behind the API-server VIP, or
//! initialise its first control-plane node (DESIGN.md §pipeline step 4).
//!
//! A rerun that finds the files of an earlier kubeadm run first asks
//! whether this node is already a member ([`membership`]): a member is
//! done and never reset; only a node the API server provably does not
//! have is reset; anything in between stops the stage for the operator.
//! The same question comes before the reset between two attempts.
//!
//! Join (`control-plane`, `worker`): node-init's own token discovery first
//! ([`discovery`]), so a wrong token, pin, proxy or VIP is a verdict in
//! seconds and kubeadm is never called on a mismatch. Then `kubeadm join`
//! with a rendered JoinConfiguration, a bounded number of times, with
//! `kubeadm reset -f` between attempts.
//!
//! Init: the pre-seeded CA into `/etc/kubernetes/pki`, kube-vip's static
//! pod for the VIP, InitConfiguration + ClusterConfiguration, `kubeadm init
//! --upload-certs`; on 1.29+ kube-vip is pointed back at admin.conf after.
//!
//! Both end by writing Cluster API's `bootstrap-success.complete`. The
//! rendered kubeadm config holds the token and certificate key, so it is
//! 0600 beside node-init's own config, and no secret reaches a log or the
//! stage's facts. Once the node is a member, [`scrub`] removes the join
//! material from the disk; a config whose material reads `scrubbed`
//! ([`Member::Joined`]) is decided by membership alone, never by kubeadm.

pub mod discovery;
pub mod images;
pub mod local;
pub mod membership;
pub mod preflight;
pub mod render;
pub mod scrub;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use tokio::time::Instant;

use crate::config::values::{CertKey, KubeVersion, Token};
use crate::config::{ClusterCa, Config, Kubernetes, Member, Role, Vip};
use crate::retry::Backoff;
use crate::runner::{Cmd, tail};
use crate::stages::{Ahead, Context, Details, Done, Fingerprint, Outcome, Stage};
use local::Local;
use membership::Verdict;

pub const KUBEADM_CONFIG: &str = "/etc/node-init/kubeadm.yaml";
pub const BOOTSTRAP_SUCCESS: &str = "/run/cluster-api/bootstrap-success.complete";
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
pub const CA_KEY: &str = "/etc/kubernetes/pki/ca.key";

/// Files a previous, interrupted kubeadm run leaves behind; kubeadm's
/// preflight refuses to start over them.
const LEFTOVERS: [&str; 5] = [
    membership::KUBELET_CONF,
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/manifests/kube-apiserver.yaml",
    "/etc/kubernetes/manifests/etcd.yaml",
    "/var/lib/etcd/member",
];

/// kubeadm itself: three attempts, about 5 s then 10 s (with jitter) between;
/// the reset in between takes longer than that.
const ATTEMPTS: Backoff = Backoff { first: Duration::from_secs(5), max: Duration::from_secs(30), attempts: 3 };
const KUBEADM_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const RESET_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct KubernetesStage;

#[async_trait]
impl Stage for KubernetesStage {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    /// Only the role and the endpoint: rerunning kubeadm resets the node,
    /// so a changed version or token on a node already in the cluster is
    /// not a reason to do it again, nor is the join material that
    /// [`scrub`] removes after the join.
    fn inputs(&self, c: &Config, f: &mut Fingerprint) {
        match &c.kubernetes {
            Some(k) => f.add("role", k.role().as_str()).add("endpoint", &k.endpoint),
            None => f.add("role", "none"),
        };
    }

    /// The images for every role that will run kubeadm; a join's
    /// discovery too.
    fn ahead_slots(&self, c: &Config) -> &'static [&'static str] {
        match c.kubernetes.as_ref().map(|k| &k.member) {
            Some(Member::Init { .. }) => &["images"],
            Some(Member::ControlPlane { .. } | Member::Worker { .. }) => &["discovery", "images"],
            Some(Member::Joined { .. }) | None => &[],
        }
    }

    /// Beside the patch: the image pre-pull, and a join's discovery. Both
    /// only read what the proxy and host stages set (containerd's
    /// environment and config) and the cluster; neither needs a lock.
    async fn ahead(&self, cx: &Context<'_>, ahead: &Ahead) {
        let Some(k) = &cx.config.kubernetes else { return };
        let pull = ahead.run("images", None, images::ensure(cx, k, k.version));
        let discover = async {
            let (Member::ControlPlane { token, ca_cert_hashes, .. } | Member::Worker { token, ca_cert_hashes }) =
                &k.member
            else {
                return;
            };
            // A verdict on the cluster's identity: the same token, pins and
            // endpoint give the same one after a reboot.
            let mut f = ahead.fingerprint();
            f.add("endpoint", &k.endpoint).secret("token", &token.expose());
            for h in ca_cert_hashes {
                f.add("ca_cert_hash", &h.0);
            }
            let key = f.finish();
            ahead.run("discovery", Some(key), discovered(cx, k, token)).await;
        };
        tokio::join!(pull, discover);
    }

    async fn run(&self, cx: &Context<'_>) -> Result<Outcome> {
        let Some(k) = &cx.config.kubernetes else {
            return Ok(Outcome::Skipped("no kubernetes key in the config".into()));
        };
        let local = local::derive(cx.node, k)?;
        let mut details = Details::new();
        details.insert("role".into(), k.role().as_str().into());
        details.insert("endpoint".into(), k.endpoint.to_string().into());
        let todo = match &k.member {
            Member::Init { token, ca, certificate_key, vip } => {
                Todo::Init(Init { token, ca, key: certificate_key, vip })
            }
            Member::ControlPlane { token, .. } | Member::Worker { token, .. } => Todo::Join(token),
            Member::Joined { .. } => return joined(cx, k, &local, details).await,
        };
        if let Some(left) = LEFTOVERS.iter().find(|p| cx.root.exists(p)) {
            tracing::info!(file = left, "an earlier kubeadm run left files behind; is this node already a member?");
            if let Some(member) = reset_unless_member(cx, k, &mut details).await? {
                return member.done(cx, k, &local, details);
            }
        }
        let version = match k.version {
            Some(v) => v,
            None => kubeadm_version(cx).await?,
        };
        let passed = preflight::gate(cx, k).await?;
        tracing::info!("{passed}");
        details.insert("preflight".into(), passed.into());
        details.insert("kubernetes_version".into(), version.to_string().into());
        details.insert("kubeadm_api".into(), render::api_version(version).into());
        let ran = match todo {
            Todo::Init(i) => init(cx, k, i, version, &local, &mut details).await?,
            Todo::Join(token) => join(cx, k, token, version, &local, &mut details).await?,
        };
        if let Ran::Member(member) = ran {
            return member.done(cx, k, &local, details);
        }
        settle_kube_vip(cx, k, &local)?;
        if cx.dry_run {
            return Ok(Outcome::Done(Done::new(details)));
        }
        cx.write(BOOTSTRAP_SUCCESS, b"success\n", 0o644)?;
        scrub::after_join(cx, k, &mut details)?;
        let summary = match &k.member {
            Member::Init { .. } => format!("initialised the cluster at {} ({version})", k.endpoint),
            _ => format!("joined {} as {} ({version})", k.endpoint, k.role().as_str()),
        };
        Ok(Outcome::Done(Done::new(details).summary(summary)))
    }
}

/// A node the API server already has, and what it said.
struct Known {
    name: String,
    evidence: String,
}

impl Known {
    /// The stage's end for a member: nothing of kubeadm's is touched; what
    /// node-init does after kubeadm (kube-vip on admin.conf, Cluster API's
    /// marker, which lives in /run) is made true again.
    fn done(self, cx: &Context<'_>, k: &Kubernetes, local: &Local, mut details: Details) -> Result<Outcome> {
        settle_kube_vip(cx, k, local)?;
        if !cx.dry_run {
            cx.write(BOOTSTRAP_SUCCESS, b"success\n", 0o644)?;
        }
        scrub::after_join(cx, k, &mut details)?;
        let summary =
            format!("found {} already a member of {} ({}); kubeadm not run", self.name, k.endpoint, self.evidence);
        details.insert("membership".into(), self.evidence.into());
        Ok(Outcome::Done(Done::new(details).summary(summary)))
    }
}

/// What kubeadm is to do with the join material.
enum Todo<'a> {
    Init(Init<'a>),
    Join(&'a Token),
}

/// A node whose join material was scrubbed after it joined: membership
/// decides, kubeadm is never run (nor reset) without the material.
async fn joined(cx: &Context<'_>, k: &Kubernetes, local: &Local, details: Details) -> Result<Outcome> {
    let not_member = |evidence: &str| {
        anyhow::anyhow!(
            "the join material (kubernetes.token, certificate_key, ca.key) reads `scrubbed`: node-init removed it \
             after this node joined, but this node is not a member of the cluster now ({evidence}); give it fresh \
             material from `node-init join-material --role {}` on a control-plane node (in a config.d file or the \
             user data, replacing every scrubbed key), then run node-init again",
            k.role().as_str()
        )
    };
    match membership::check(cx, k).await.context("the join material was scrubbed after this node joined")? {
        Verdict::Member { name, evidence } => {
            tracing::info!(node = %name, %evidence, "the join material was scrubbed after the join; still a member");
            Known { name, evidence }.done(cx, k, local, details)
        }
        Verdict::NotMember { evidence } => Err(not_member(&evidence)),
    }
}

/// Before any `kubeadm reset`: a member is returned and not reset; a node
/// that is provably not one is reset; anything else is an error.
async fn reset_unless_member(cx: &Context<'_>, k: &Kubernetes, details: &mut Details) -> Result<Option<Known>> {
    match membership::check(cx, k).await? {
        Verdict::Member { name, evidence } => {
            tracing::info!(node = %name, %evidence, "this node is already a member of the cluster; not resetting it");
            Ok(Some(Known { name, evidence }))
        }
        Verdict::NotMember { evidence } => {
            tracing::warn!(%evidence, "resetting with `kubeadm reset -f`: this node is not a member of the cluster");
            details.insert("membership".into(), evidence.into());
            reset(cx).await?;
            Ok(None)
        }
    }
}

/// kube-vip as it runs after kubeadm: from admin.conf, on the init node and
/// on control-plane nodes that announce the VIP.
fn settle_kube_vip(cx: &Context<'_>, k: &Kubernetes, local: &Local) -> Result<()> {
    match (k.role(), &k.vip, &local.vip_interface) {
        (Role::Worker, ..) => {}
        (_, Some(vip), Some(interface)) => {
            let manifest = render::kube_vip_manifest(k, vip, interface, render::ADMIN_CONF);
            if cx.write(render::KUBE_VIP_MANIFEST, manifest.as_bytes(), 0o600)? != crate::root::Change::Unchanged {
                tracing::info!("kube-vip reads admin.conf");
            }
        }
        (Role::Init, ..) => bail!("kube-vip needs an interface for the VIP: set kubernetes.vip.interface"),
        (Role::ControlPlane, ..) => {
            tracing::warn!("no kubernetes.vip: this control-plane node will not take over the VIP");
        }
    }
    Ok(())
}

/// The version kubeadm was built for, when the config names none: init
/// must not let kubeadm look up "stable" on the internet.
pub(crate) async fn kubeadm_version(cx: &Context<'_>) -> Result<KubeVersion> {
    let cmd = Cmd::new(["kubeadm", "version", "-o", "short"], VERSION_TIMEOUT);
    let out = cx
        .runner
        .run(&cmd)
        .await
        .and_then(|o| o.check(&cmd))
        .context("asking kubeadm for its version (is kubeadm installed? or set kubernetes.version)")?;
    out.stdout.trim().parse().map_err(|e: String| anyhow::anyhow!("`{cmd}` printed {e}"))
}

/// How the kubeadm attempts ended.
enum Ran {
    /// kubeadm succeeded.
    Kubeadm,
    /// kubeadm failed, but the node is a member all the same.
    Member(Known),
}

async fn join(
    cx: &Context<'_>,
    k: &Kubernetes,
    token: &Token,
    v: KubeVersion,
    local: &Local,
    details: &mut Details,
) -> Result<Ran> {
    let found = match cx.ahead().and_then(|a| a.take("discovery")) {
        Some(done) => done,
        None => discovered(cx, k, token).await?,
    };
    details.extend(found.details);
    pulled(cx, k, v, details).await?;
    cx.write(KUBEADM_CONFIG, render::join_config(k, token, v, local).as_bytes(), 0o600)?;
    let argv = ["kubeadm", "join", "--config", KUBEADM_CONFIG];
    kubeadm(cx, k, &argv, || Ok(()), details).await
}

/// node-init's token discovery against the endpoint, as the stage's facts.
async fn discovered(cx: &Context<'_>, k: &Kubernetes, token: &Token) -> Result<Done> {
    let addr = resolve(cx, k).await?;
    let found = discovery::discover(k, token, addr, k.discovery_timeout.0).await?;
    tracing::info!(server = %found.server, pin = %found.pin, "cluster-info is signed with this token and its CA is pinned");
    let mut details = Details::new();
    details.insert("discovery_attempts".into(), found.attempts.into());
    details.insert("ca_pin".into(), found.pin.into());
    details.insert("api_server".into(), found.server.into());
    Ok(Done::new(details))
}

/// The node's images in containerd: pulled ahead beside the patch (waited
/// for if still under way), or pulled now.
async fn pulled(cx: &Context<'_>, k: &Kubernetes, v: KubeVersion, details: &mut Details) -> Result<()> {
    let ahead = match cx.ahead() {
        Some(a) => a.wait("images").await,
        None => None,
    };
    let done = match ahead {
        Some(done) => done,
        None => images::ensure(cx, k, Some(v)).await?,
    };
    details.extend(done.details);
    Ok(())
}

/// What only the init node has.
struct Init<'a> {
    token: &'a Token,
    ca: &'a ClusterCa,
    key: &'a CertKey,
    vip: &'a Vip,
}

async fn init(
    cx: &Context<'_>,
    k: &Kubernetes,
    i: Init<'_>,
    v: KubeVersion,
    local: &Local,
    details: &mut Details,
) -> Result<Ran> {
    let Init { token, ca, key, vip } = i;
    let Some(interface) = local.vip_interface.as_deref() else {
        bail!("kube-vip needs an interface for the VIP: set kubernetes.vip.interface")
    };
    let during = if render::kube_vip_needs_super_admin(v) { render::SUPER_ADMIN_CONF } else { render::ADMIN_CONF };
    pulled(cx, k, v, details).await?;
    cx.write(KUBEADM_CONFIG, render::init_config(k, token, key, v, local).as_bytes(), 0o600)?;
    // kubeadm reset empties /etc/kubernetes, so every attempt lays these
    // down again.
    let prepare = || -> Result<()> {
        cx.write(CA_CERT, ca.cert.pem.as_bytes(), 0o644)?;
        cx.write(CA_KEY, ca.key.0.expose().as_bytes(), 0o600)?;
        cx.write(render::KUBE_VIP_MANIFEST, render::kube_vip_manifest(k, vip, interface, during).as_bytes(), 0o600)?;
        Ok(())
    };
    let argv = ["kubeadm", "init", "--config", KUBEADM_CONFIG, "--upload-certs"];
    let ran = kubeadm(cx, k, &argv, prepare, details).await?;
    details.insert("kube_vip".into(), render::KUBE_VIP_MANIFEST.into());
    Ok(ran)
}

/// Runs `kubeadm init|join` up to [`ATTEMPTS`] times, `prepare` before
/// each. A failed attempt is followed by the membership question: a member
/// ends the attempts (kubeadm failed after the node joined), a node that
/// is provably not one is reset and tried again, and "cannot tell" stops
/// the stage with kubeadm's output and why.
async fn kubeadm(
    cx: &Context<'_>,
    k: &Kubernetes,
    argv: &[&str],
    prepare: impl Fn() -> Result<()>,
    details: &mut Details,
) -> Result<Ran> {
    let cmd = Cmd::new(argv.iter().copied(), KUBEADM_TIMEOUT);
    let deadline = Instant::now() + KUBEADM_TIMEOUT * ATTEMPTS.attempts + ATTEMPTS.max * ATTEMPTS.attempts;
    let mut attempt = 0;
    loop {
        attempt += 1;
        details.insert("kubeadm_attempts".into(), attempt.into());
        prepare()?;
        let Some(out) = cx.exec(&cmd).await? else { return Ok(Ran::Kubeadm) };
        if out.success() {
            tracing::info!(attempt, "`{cmd}` succeeded");
            return Ok(Ran::Kubeadm);
        }
        let status = out.code.map_or_else(|| "was killed".to_owned(), |c| format!("exited with {c}"));
        let output = redact(&tail(&format!("{}\n{}", out.stdout, out.stderr), 15), &cx.config.kubernetes);
        tracing::warn!(attempt, %status, output = %output, "`{cmd}` failed");
        if attempt >= ATTEMPTS.attempts {
            bail!("`{cmd}` failed {attempt} times; the last one {status}: {output}");
        }
        let failed = || format!("`{cmd}` {status} ({output})");
        match reset_unless_member(cx, k, details).await.with_context(failed)? {
            Some(member) => {
                tracing::warn!("`{cmd}` {status}, but the node is a member of the cluster: not trying again");
                details.insert("kubeadm_last_error".into(), failed().into());
                return Ok(Ran::Member(member));
            }
            None if !ATTEMPTS.wait(attempt, deadline).await => {
                bail!("`{cmd}` {status} and there is no time left to retry: {output}");
            }
            None => {}
        }
    }
}

/// kubeadm prints join commands with the token and the certificate key in
/// them; its output reaches the log only through here.
fn redact(text: &str, k: &Option<Kubernetes>) -> String {
    let Some(k) = k else { return text.to_owned() };
    let secrets = k
        .token()
        .map(|t| t.secret.expose().as_str())
        .into_iter()
        .chain(k.certificate_key().map(|c| c.0.expose().as_str()));
    secrets.fold(text.to_owned(), |t, s| t.replace(s, "<redacted>"))
}

async fn reset(cx: &Context<'_>) -> Result<()> {
    let cmd = Cmd::new(["kubeadm", "reset", "-f"], RESET_TIMEOUT);
    if let Some(out) = cx.exec(&cmd).await? {
        out.check(&cmd)?;
    }
    Ok(())
}

/// The endpoint's address: itself when it is an IP, else asked of the
/// system's nameservers (never glibc's resolver).
async fn resolve(cx: &Context<'_>, k: &Kubernetes) -> Result<SocketAddr> {
    if let Some(ip) = k.endpoint.ip() {
        return Ok(SocketAddr::new(ip, k.endpoint.port));
    }
    let servers = &cx.node.system_servers;
    if servers.is_empty() {
        bail!("kubernetes.endpoint {} is a name and /etc/resolv.conf lists no nameserver", k.endpoint);
    }
    let mut answers = Vec::new();
    for &s in servers {
        let answer = crate::dns::Server::new(s, RESOLVE_TIMEOUT).addresses(&k.endpoint.host).await;
        if let Some(ip) = answer.addresses().first() {
            return Ok(SocketAddr::new(*ip, k.endpoint.port));
        }
        answers.push(format!("{s}: {answer}"));
    }
    bail!("kubernetes.endpoint {} does not resolve ({})", k.endpoint.host, answers.join("; "))
}

#[cfg(test)]
mod tests;
