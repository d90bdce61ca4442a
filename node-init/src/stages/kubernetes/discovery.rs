//! Token discovery, done by node-init before kubeadm is called.
//!
//! The same steps as kubeadm's own discovery, each with a verdict of its own
//! and a bound: TCP to the endpoint; GET `kube-public/cluster-info` over TLS
//! without trusting the server yet and without any proxy; the detached JWS
//! for this token id checked with the token secret; the CA in the signed
//! kubeconfig pinned by `ca_cert_hashes`; then the same GET again, this time
//! trusting only the pinned CA, so the server itself is proven.
//!
//! Unreachable, not yet serving, or not yet signed (the init node's
//! controller manager signs cluster-info a little after the API server is
//! up) is retried with backoff until `kubernetes.discovery_timeout`. A bad
//! signature, an unpinned CA or a server certificate from another CA is a
//! refusal at once: those do not heal by waiting.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::Kubernetes;
use crate::config::values::{Endpoint, Token};
use crate::pki;
use crate::retry::Backoff;

pub const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits between tries: 1 s doubling to 15 s, as many as fit the deadline.
const BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(15), attempts: u32::MAX };

/// What a successful discovery proved.
#[derive(Debug, Clone)]
pub struct Found {
    /// The API server URL in the signed kubeconfig.
    pub server: String,
    /// The pin that matched.
    pub pin: String,
    pub attempts: u32,
}

#[derive(Debug)]
enum Failure {
    /// Not there yet: retried until the deadline.
    Retry(String),
    /// Proven wrong: never retried, kubeadm is never called.
    Refuse(String),
}

/// Runs discovery against `addr` (the endpoint resolved) until it succeeds,
/// is refused, or `deadline` passes.
pub async fn discover(k: &Kubernetes, token: &Token, addr: SocketAddr, deadline: Duration) -> Result<Found> {
    let until = Instant::now() + deadline;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match once(k, token, addr).await {
            Ok((server, pin)) => return Ok(Found { server, pin, attempts: attempt }),
            Err(Failure::Refuse(why)) => bail!("refusing to join {}: {why}", k.endpoint),
            Err(Failure::Retry(why)) => {
                tracing::info!(attempt, endpoint = %k.endpoint, reason = %why, "cluster-info not available yet");
                if !BACKOFF.wait(attempt, until).await {
                    bail!(
                        "token discovery against {} gave up after {attempt} attempts in {}: {why}",
                        k.endpoint,
                        humantime::format_duration(deadline)
                    );
                }
            }
        }
    }
}

async fn once(k: &Kubernetes, token: &Token, addr: SocketAddr) -> Result<(String, String), Failure> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => return Err(Failure::Retry(format!("TCP to {addr}: no answer within {CONNECT_TIMEOUT:?}"))),
        Ok(Err(e)) => return Err(Failure::Retry(format!("TCP to {addr}: {e}"))),
        Ok(Ok(_)) => {}
    }
    let body = get(&k.endpoint, addr, Trust::Any).await?;
    let info = ClusterInfo::parse(&body)?;
    let key = format!("jws-kubeconfig-{}", token.id);
    let Some(jws) = info.data.get(&key).and_then(|v| v.as_str()) else {
        let mut signed: Vec<&str> =
            info.data.keys().filter_map(|k| k.strip_prefix("jws-kubeconfig-")).collect::<Vec<_>>();
        signed.sort_unstable();
        return Err(Failure::Retry(format!(
            "cluster-info has no signature for token id {} (signed for: {}); the token is wrong, expired, \
             or not created yet",
            token.id,
            if signed.is_empty() { "none".to_owned() } else { signed.join(", ") }
        )));
    };
    crate::jws::verify_detached(jws, info.kubeconfig.as_bytes(), &token.id, token.secret.expose().as_bytes())
        .map_err(|e| Failure::Refuse(format!("{key}: {e}")))?;
    let (server, bundle) = info.cluster()?;
    let pin = pin(&bundle, &k.ca_cert_hashes().iter().map(|h| h.0.as_str()).collect::<Vec<_>>())?;
    let again = get(&k.endpoint, addr, Trust::Only(bundle)).await?;
    if ClusterInfo::parse(&again)?.kubeconfig != info.kubeconfig {
        return Err(Failure::Refuse("cluster-info changed between the unverified and the verified read".into()));
    }
    Ok((server, pin))
}

/// The CA certificates in the signed kubeconfig must include one whose
/// public key is pinned. Returns that pin.
fn pin(bundle: &[Vec<u8>], pins: &[&str]) -> Result<String, Failure> {
    let mut seen = Vec::new();
    for der in bundle {
        let hash = pki::spki_sha256(der).map_err(|e| Failure::Refuse(format!("the cluster CA: {e:#}")))?;
        if pins.contains(&hash.as_str()) {
            return Ok(hash);
        }
        seen.push(hash);
    }
    Err(Failure::Refuse(format!(
        "the cluster CA is not pinned: cluster-info's CA is {}, kubernetes.ca_cert_hashes allows {}",
        seen.join(", "),
        pins.join(", ")
    )))
}

#[derive(Debug, Deserialize)]
struct ConfigMap {
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
}

struct ClusterInfo {
    data: serde_json::Map<String, serde_json::Value>,
    kubeconfig: String,
}

impl ClusterInfo {
    fn parse(body: &[u8]) -> Result<Self, Failure> {
        let cm: ConfigMap = serde_json::from_slice(body)
            .map_err(|e| Failure::Retry(format!("cluster-info is not a ConfigMap in JSON: {e}")))?;
        let kubeconfig = cm
            .data
            .get("kubeconfig")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Failure::Retry("cluster-info has no kubeconfig".into()))?
            .to_owned();
        Ok(Self { data: cm.data, kubeconfig })
    }

    /// The server and the CA bundle of the signed kubeconfig's one cluster.
    fn cluster(&self) -> Result<(String, Vec<Vec<u8>>), Failure> {
        #[derive(Deserialize)]
        struct Kubeconfig {
            clusters: Vec<Named>,
        }
        #[derive(Deserialize)]
        struct Named {
            cluster: Cluster,
        }
        #[derive(Deserialize)]
        struct Cluster {
            server: String,
            #[serde(rename = "certificate-authority-data")]
            ca: String,
        }
        let bad = |why: String| Failure::Refuse(format!("the signed kubeconfig in cluster-info: {why}"));
        let kc: Kubeconfig = serde_saphyr::from_str(&self.kubeconfig).map_err(|e| bad(e.to_string()))?;
        let [Named { cluster }] =
            <[Named; 1]>::try_from(kc.clusters).map_err(|c| bad(format!("{} clusters, expected one", c.len())))?;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(cluster.ca.trim())
            .map_err(|_| bad("certificate-authority-data is not base64".into()))?;
        let bundle = pki::pem_certificates(&pem).map_err(|e| bad(format!("certificate-authority-data: {e:#}")))?;
        Ok((cluster.server, bundle))
    }
}

enum Trust {
    /// The first read: the server is not known yet; what it sends is
    /// proven by the JWS instead.
    Any,
    /// The second read: only the pinned CA.
    Only(Vec<Vec<u8>>),
}

/// GET cluster-info from `addr`, never through a proxy, names resolved to
/// `addr` only (no resolver of glibc's is ever asked).
async fn get(endpoint: &Endpoint, addr: SocketAddr, trust: Trust) -> Result<Vec<u8>, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rejected = Arc::new(Mutex::new(None));
    let verifier: Arc<dyn ServerCertVerifier> = match &trust {
        Trust::Any => Arc::new(AnyServer(provider.clone())),
        Trust::Only(bundle) => Arc::new(
            Recording::trusting(bundle, provider.clone(), rejected.clone())
                .map_err(|e| Failure::Refuse(format!("the pinned CA is unusable: {e}")))?,
        ),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Retry(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let client = api_client(endpoint, addr, tls)
        .map_err(|e| Failure::Retry(format!("HTTP client: {}", crate::error::chain(&e))))?;
    let url = format!("https://{endpoint}{CLUSTER_INFO}");
    let sent = client.get(&url).header("Accept", "application/json").send().await;
    if let Some(why) = rejected.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        return Err(Failure::Refuse(format!(
            "the API server's certificate is not from the pinned CA, though cluster-info's signature and pin \
             were good ({why}); something else answers at {endpoint}"
        )));
    }
    let resp = sent.map_err(|e| Failure::Retry(format!("GET {url}: {}", crate::error::chain(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Failure::Retry(format!("GET {url}: HTTP {status}")));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| Failure::Retry(format!("GET {url}: reading the body: {}", crate::error::chain(&e))))?;
    Ok(body.to_vec())
}

/// A client for the API server at `addr`: never through the proxy (the
/// VIP is on the machine network), HTTP/1.1, the given TLS, bounded waits;
/// a named endpoint is pinned to the address already resolved.
pub(super) fn api_client(
    endpoint: &Endpoint,
    addr: SocketAddr,
    tls: rustls::ClientConfig,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if endpoint.ip().is_none() {
        builder = builder.resolve(&endpoint.host, addr);
    }
    builder.build()
}

/// Accepts any server certificate but still checks the handshake
/// signatures; used only for the read whose content the JWS proves.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A verifier trusting only given CAs, keeping why it rejected a
/// certificate so that a wrong server is told apart from a network failure.
#[derive(Debug)]
pub(super) struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    rejected: Arc<Mutex<Option<String>>>,
}

impl Recording {
    /// Trusts the CAs in `bundle` (DER); a rejection's reason lands in
    /// `rejected`.
    pub(super) fn trusting(
        bundle: &[Vec<u8>],
        provider: Arc<rustls::crypto::CryptoProvider>,
        rejected: Arc<Mutex<Option<String>>>,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for der in bundle {
            roots.add(CertificateDer::from(der.clone())).map_err(|e| e.to_string())?;
        }
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { inner, rejected })
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).inspect_err(|e| {
            *self.rejected.lock().expect("verifier lock") = Some(e.to_string());
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
