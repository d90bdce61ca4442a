//! Is this node already a member of the cluster? Asked before every
//! `kubeadm reset`, because a reset is only safe on a node the cluster does
//! not have: a power cut after kubeadm succeeded but before the state was
//! saved, or an init node rebooting mid-init, leaves the files of a real
//! member, and resetting the init node wipes etcd under peers that joined.
//!
//! The contract, in [`check`]:
//! - `/etc/kubernetes/kubelet.conf` present: the API server, through
//!   `kubernetes.endpoint` (the VIP) and never a proxy, is asked
//!   `GET /api/v1/nodes/<name>` with the kubelet's own client certificate,
//!   trusting only the CA in kubelet.conf. `<name>` is the one the
//!   certificate says (`system:node:<name>`): the name the cluster knows
//!   the node by. 200 is a [`Verdict::Member`]: the stage is done, nothing
//!   is reset. 404 is a [`Verdict::NotMember`]: a reset is safe.
//! - No kubelet.conf and no etcd or control-plane manifests: nothing a
//!   member has, so [`Verdict::NotMember`] too.
//! - Anything else is no proof either way and an error that says what was
//!   seen: an API that stays unreachable until `kubernetes.discovery_timeout`
//!   (after a reboot the VIP comes back only once kubelet has started the
//!   static pods), 401 or 403, unreadable credentials, or etcd leftovers
//!   without a kubelet.conf. The operator resets by hand if they know better.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::time::Instant;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::discovery::Recording;
use crate::config::Kubernetes;
use crate::retry::Backoff;
use crate::stages::Context;

pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";

/// What a control-plane node that ran etcd keeps: without a kubelet.conf
/// to ask with, these may still be the cluster's only copy of its data.
pub const ETCD_TRACES: [&str; 3] =
    ["/etc/kubernetes/manifests/etcd.yaml", "/etc/kubernetes/manifests/kube-apiserver.yaml", "/var/lib/etcd/member"];

const REFUSE: &str = "node-init will not reset a node that may be a member of the cluster; if it is not one, run \
                      `kubeadm reset -f` on it by hand and run node-init again";
/// Waits between tries while the API server does not answer: 1 s doubling
/// to 15 s, as many as fit `kubernetes.discovery_timeout`.
const BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(15), attempts: u32::MAX };

/// What the check proved. Each carries the evidence for the stage's
/// details, e.g. `member (GET /api/v1/nodes/node1.maas: 200)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The API server has this node: never reset it.
    Member { name: String, evidence: String },
    /// Provably not a member: a reset destroys nothing the cluster has.
    NotMember { evidence: String },
}

/// Decides whether this node is a member; an error is "cannot tell", and
/// says what was seen.
pub async fn check(cx: &Context<'_>, k: &Kubernetes) -> Result<Verdict> {
    let Some(conf) = cx.root.read_string_opt(KUBELET_CONF)? else {
        if let Some(trace) = ETCD_TRACES.iter().find(|p| cx.root.exists(p)) {
            bail!(
                "cannot tell whether this node is a member of the cluster: {trace} is there but {KUBELET_CONF} is \
                 not, so this node may hold the cluster's etcd data and has no credentials to ask the API server \
                 with; {REFUSE}"
            );
        }
        return Ok(Verdict::NotMember { evidence: format!("not a member (no {KUBELET_CONF}, no etcd data)") });
    };
    let cannot =
        |e: anyhow::Error| anyhow!("cannot tell whether this node is a member of the cluster: {e:#}; {REFUSE}");
    let creds = Credentials::from_kubeconfig(&conf, |path| {
        cx.root.read_opt(path)?.ok_or_else(|| anyhow!("{path} does not exist"))
    })
    .with_context(|| format!("reading the kubelet's credentials in {KUBELET_CONF}"))
    .map_err(cannot)?;
    let addr = super::resolve(cx, k).await.map_err(cannot)?;
    let path = format!("/api/v1/nodes/{}", creds.node);
    let said = |code: u16| format!("GET {path}: {code}");
    match ask(k, addr, &creds, &path).await {
        Answer::Status(200) => Ok(Verdict::Member { evidence: format!("member ({})", said(200)), name: creds.node }),
        Answer::Status(404) => Ok(Verdict::NotMember { evidence: format!("not a member ({})", said(404)) }),
        Answer::Status(code) => bail!(
            "cannot tell whether {} is a member of the cluster: {} with the kubelet's credentials from \
             {KUBELET_CONF}{}; {REFUSE}",
            creds.node,
            said(code),
            match code {
                401 => " (the API server does not accept them: expired, or from another cluster's CA?)",
                403 => " (the API server does not let them read this node)",
                _ => "",
            }
        ),
        Answer::NoAnswer(why) => bail!(
            "cannot tell whether {} is a member of the cluster: the API server at {} did not answer within {} \
             ({why}); {REFUSE}",
            creds.node,
            k.endpoint,
            humantime::format_duration(k.discovery_timeout.0)
        ),
    }
}

/// The kubelet's identity and its trust, as kubelet.conf names them.
pub struct Credentials {
    /// The node's name in its certificate (`system:node:<name>`).
    pub node: String,
    ca: Vec<Vec<u8>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default, rename = "current-context")]
    current: Option<String>,
    #[serde(default)]
    clusters: Option<Vec<Named<Cluster>>>,
    #[serde(default)]
    contexts: Option<Vec<Named<ContextRef>>>,
    #[serde(default)]
    users: Option<Vec<Named<User>>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "context", alias = "user")]
    value: T,
}

#[derive(Deserialize)]
struct Cluster {
    #[serde(default, rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(default, rename = "certificate-authority")]
    ca_file: Option<String>,
}

#[derive(Deserialize)]
struct ContextRef {
    cluster: String,
    user: String,
}

#[derive(Deserialize)]
struct User {
    #[serde(default, rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(default, rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(default, rename = "client-certificate")]
    cert_file: Option<String>,
    #[serde(default, rename = "client-key")]
    key_file: Option<String>,
}

impl Credentials {
    /// Reads a kubeconfig's current context: inline `*-data` (base64 PEM)
    /// or file paths, which `read` opens (relative ones from
    /// `/etc/kubernetes`, where kubelet.conf is). kubeadm's init node has
    /// the data inline at first; a joined node points both cert and key at
    /// `/var/lib/kubelet/pki/kubelet-client-current.pem`.
    pub fn from_kubeconfig(text: &str, read: impl Fn(&str) -> Result<Vec<u8>>) -> Result<Self> {
        let kc: Kubeconfig = serde_saphyr::from_str(text).map_err(|e| anyhow!("not a kubeconfig: {e}"))?;
        let (clusters, users) = (kc.clusters.unwrap_or_default(), kc.users.unwrap_or_default());
        let (cluster, user) = match (kc.current, kc.contexts.unwrap_or_default()) {
            (Some(cur), contexts) if !cur.is_empty() => {
                let c = contexts.into_iter().find(|c| c.name == cur).ok_or_else(|| anyhow!("no context {cur:?}"))?;
                (
                    clusters.into_iter().find(|n| n.name == c.value.cluster).map(|n| n.value),
                    users.into_iter().find(|n| n.name == c.value.user).map(|n| n.value),
                )
            }
            _ if clusters.len() == 1 && users.len() == 1 => {
                (clusters.into_iter().next().map(|n| n.value), users.into_iter().next().map(|n| n.value))
            }
            _ => bail!("no current-context, and not one cluster and one user"),
        };
        let (cluster, user) = (cluster.ok_or_else(|| anyhow!("no cluster"))?, user.ok_or_else(|| anyhow!("no user"))?);
        let material = |data: &Option<String>, file: &Option<String>, what: &str| -> Result<Vec<u8>> {
            match (data, file) {
                (Some(d), _) => base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|_| anyhow!("{what}-data is not base64")),
                (None, Some(f)) => {
                    let path = if f.starts_with('/') { f.clone() } else { format!("/etc/kubernetes/{f}") };
                    read(&path).with_context(|| format!("{what} {path}"))
                }
                (None, None) => bail!("no {what}"),
            }
        };
        let ca = crate::pki::pem_certificates(&material(&cluster.ca_data, &cluster.ca_file, "certificate-authority")?)
            .context("certificate-authority")?;
        let cert_pem = material(&user.cert_data, &user.cert_file, "client-certificate")?;
        let key_pem = material(&user.key_data, &user.key_file, "client-key")?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow!("client-certificate is not PEM"))?;
        let first = chain.first().ok_or_else(|| anyhow!("client-certificate holds no certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| anyhow!("client-key holds no private key"))?;
        Ok(Self { node: node_name(first)?, ca, chain, key })
    }
}

/// The node a kubelet client certificate is for: its CN `system:node:<name>`.
fn node_name(der: &[u8]) -> Result<String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| anyhow!("client-certificate: {e}"))?;
    let cn = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or_default();
    match cn.strip_prefix("system:node:") {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => bail!("the client certificate is for {cn:?}, not a node (system:node:<name>)"),
    }
}

enum Answer {
    Status(u16),
    /// Nothing answered, or nothing this node can trust; why.
    NoAnswer(String),
}

/// GETs `path` until the API server answers with a status that is not a
/// passing condition (5xx, 429), or the deadline passes.
async fn ask(k: &Kubernetes, addr: SocketAddr, creds: &Credentials, path: &str) -> Answer {
    let until = Instant::now() + k.discovery_timeout.0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let why = match once(k, addr, creds, path).await {
            Ok(code) if code < 500 && code != 429 => return Answer::Status(code),
            Ok(code) => format!("HTTP {code}"),
            Err(Failure::Refused(why)) => return Answer::NoAnswer(why),
            Err(Failure::Later(why)) => why,
        };
        tracing::info!(attempt, endpoint = %k.endpoint, reason = %why, "the API server does not answer yet");
        if !BACKOFF.wait(attempt, until).await {
            return Answer::NoAnswer(format!("{attempt} attempts; the last: {why}"));
        }
    }
}

enum Failure {
    /// May heal: not up yet.
    Later(String),
    /// Will not heal by waiting: a server this node cannot trust.
    Refused(String),
}

async fn once(k: &Kubernetes, addr: SocketAddr, creds: &Credentials, path: &str) -> Result<u16, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rejected = Arc::new(Mutex::new(None));
    let verifier = Recording::trusting(&creds.ca, provider.clone(), rejected.clone())
        .map_err(|e| Failure::Refused(format!("the CA in {KUBELET_CONF} is unusable: {e}")))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Refused(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(|e| Failure::Refused(format!("the kubelet's client certificate and key: {e}")))?;
    let client = super::discovery::api_client(&k.endpoint, addr, tls)
        .map_err(|e| Failure::Refused(format!("HTTP client: {}", crate::error::chain(&e))))?;
    let url = format!("https://{}{path}", k.endpoint);
    let sent = client.get(&url).header("Accept", "application/json").send().await;
    if let Some(why) = rejected.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        return Err(Failure::Refused(format!(
            "the API server's certificate is not from the CA in {KUBELET_CONF} ({why})"
        )));
    }
    let resp = sent.map_err(|e| Failure::Later(format!("GET {url}: {}", crate::error::chain(&e))))?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    const NO_FILES: fn(&str) -> Result<Vec<u8>> = |p| bail!("{p} does not exist");

    #[test]
    fn inline_data_as_kubeadm_writes_it_on_the_init_node() {
        let ca = node_init_tests::kube::ClusterCa::new();
        let (cert, key) = ca.kubelet_client("node1.maas");
        let conf = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: \
             https://10.11.12.100:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    \
             user: system:node:node1.maas\n  name: system:node:node1.maas@kubernetes\ncurrent-context: \
             system:node:node1.maas@kubernetes\nkind: Config\npreferences: {{}}\nusers:\n- name: \
             system:node:node1.maas\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ca.cert_pem),
            b64(&cert),
            b64(&key)
        );
        let c = Credentials::from_kubeconfig(&conf, NO_FILES).unwrap();
        assert_eq!(c.node, "node1.maas");
        assert_eq!(c.chain.len(), 1);
    }

    #[test]
    fn file_paths_as_the_kubelet_writes_them_after_tls_bootstrap() {
        let ca = node_init_tests::kube::ClusterCa::new();
        let (cert, key) = ca.kubelet_client("node2.maas");
        let pem = "/var/lib/kubelet/pki/kubelet-client-current.pem";
        let conf = node_init_tests::kubeadm::kubeconfig(&ca, "10.11.12.100:6443", pem);
        let both = cert + &key;
        let c = Credentials::from_kubeconfig(&conf, |p| {
            assert_eq!(p, pem);
            Ok(both.clone().into_bytes())
        })
        .unwrap();
        assert_eq!(c.node, "node2.maas");
        let err = Credentials::from_kubeconfig(&conf, NO_FILES).err().unwrap();
        assert!(format!("{err:#}").contains(&format!("client-certificate {pem}: {pem} does not exist")), "{err:#}");
    }

    #[test]
    fn a_certificate_that_is_not_a_nodes_is_named() {
        let ca = node_init_tests::kube::ClusterCa::new();
        let (cert, key) = ca.client("kubernetes-admin", "kubeadm:cluster-admins");
        let conf = format!(
            "clusters:\n- cluster:\n    certificate-authority-data: {}\n  name: k\nusers:\n- name: u\n  user:\n    \
             client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ca.cert_pem),
            b64(&cert),
            b64(&key)
        );
        let err = Credentials::from_kubeconfig(&conf, NO_FILES).err().unwrap().to_string();
        assert!(err.contains("\"kubernetes-admin\", not a node"), "{err}");
    }
}
