//! A kube-apiserver stand-in for token discovery: TLS (rustls, a leaf from
//! the cluster CA minted with rcgen) serving
//! `/api/v1/namespaces/kube-public/configmaps/cluster-info` as kube-apiserver
//! does, with a real kubeconfig and a real detached HS256 JWS computed here,
//! independently of node-init's verifier.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Background;

pub const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// A cluster CA: its certificate, its key, and what signs with them.
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl ClusterCa {
    /// A fresh CA, as kubeadm would make (CN kubernetes).
    pub fn new() -> Self {
        Self::named("kubernetes")
    }

    /// A fresh CA with this common name.
    pub fn named(cn: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA");
        let key_pem = key.serialize_pem();
        Self { cert_pem: cert.pem(), key_pem, issuer: rcgen::Issuer::new(params, key) }
    }

    /// An existing CA (e.g. one `node-init secrets` made).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Self {
        let key = rcgen::KeyPair::from_pem(key_pem).expect("CA key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key).expect("CA cert");
        Self { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned(), issuer }
    }

    /// kubeadm's pin: SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn hash(&self) -> String {
        let key = rcgen::KeyPair::from_pem(&self.key_pem).expect("CA key");
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        format!("sha256:{}", crate::hex(&Sha256::digest(spki)))
    }

    /// A server certificate for `ip`, signed by this CA.
    pub fn leaf(&self, ip: std::net::IpAddr) -> (rustls::pki_types::CertificateDer<'static>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["kubernetes".to_owned()]).expect("params");
        params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.der().clone(), key)
    }
}

impl Default for ClusterCa {
    fn default() -> Self {
        Self::new()
    }
}

/// What the stand-in gets wrong, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// cluster-info signed with the token, the server's certificate from
    /// the cluster CA.
    Good,
    /// Signed with another secret for the same token id.
    WrongSecret,
    /// No `jws-kubeconfig-<id>` key for the token.
    NoSignature,
    /// cluster-info is right, but the TLS certificate comes from another CA.
    OtherCa,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl ApiServer {
    /// cluster-info requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The detached JWS kube-controller-manager's bootstrap signer stores.
pub fn sign_detached(content: &str, token_id: &str, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{header}.{}", URL_SAFE_NO_PAD.encode(content)).as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The ConfigMap as kube-apiserver returns it.
pub fn cluster_info(ca_pem: &str, server: &str, token: &str, serve: Serve) -> String {
    let (id, secret) = token.split_once('.').expect("id.secret");
    let kubeconfig = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: \"\"\n\
         contexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        STANDARD.encode(ca_pem)
    );
    let mut data = serde_json::Map::new();
    match serve {
        Serve::NoSignature => {
            data.insert(
                "jws-kubeconfig-zzzzzz".into(),
                sign_detached(&kubeconfig, "zzzzzz", "0000000000000000").into(),
            );
        }
        Serve::WrongSecret => {
            data.insert(format!("jws-kubeconfig-{id}"), sign_detached(&kubeconfig, id, "wrongwrongwrong0").into());
        }
        Serve::Good | Serve::OtherCa => {
            data.insert(format!("jws-kubeconfig-{id}"), sign_detached(&kubeconfig, id, secret).into());
        }
    }
    data.insert("kubeconfig".into(), kubeconfig.into());
    serde_json::json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cluster-info", "namespace": "kube-public"},
        "data": data,
    })
    .to_string()
}

/// Serves cluster-info for `ca` and `token` on `addr` (port 0 picks one).
pub fn api_server(bg: &Background, addr: SocketAddr, ca: &ClusterCa, token: &str, serve: Serve) -> ApiServer {
    let listener = bg.listen(addr);
    let bound = listener.local_addr().expect("local addr");
    let other;
    let signer = if serve == Serve::OtherCa {
        other = ClusterCa::new();
        &other
    } else {
        ca
    };
    let (cert, key) = signer.leaf(bound.ip());
    let acceptor = crate::net::tls_acceptor(cert, &key);
    let body = cluster_info(&ca.cert_pem, &format!("https://{bound}"), token, serve);
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    bg.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body, counter) = (acceptor.clone(), body.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let response = if path == CLUSTER_INFO {
                    counter.fetch_add(1, Ordering::SeqCst);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                };
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    ApiServer { addr: bound, requests }
}
