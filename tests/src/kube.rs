//! A kube-apiserver stand-in for token discovery and the membership
//! question: TLS (rustls, a leaf from the cluster CA minted with rcgen)
//! serving `/api/v1/namespaces/kube-public/configmaps/cluster-info` as
//! kube-apiserver does, with a real kubeconfig and a real detached HS256
//! JWS computed here, independently of node-init's verifier; and
//! `/api/v1/nodes/<name>` behind kube-apiserver's authentication and the
//! Node authorizer, for kubelet client certificates minted here as kubeadm
//! and the kubelet's TLS bootstrap make them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

    /// A client certificate for user `cn` in group `org`, signed by this
    /// CA, as PEM certificate and PKCS#8 key.
    pub fn client(&self, cn: &str, org: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = self.client_params(cn, org).signed_by(&key, &self.issuer).expect("client certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// The kubelet's client certificate for node `name` (CN
    /// `system:node:<name>`, O `system:nodes`), with its ECDSA P-256 key as
    /// the kubelet writes it: SEC1, `EC PRIVATE KEY`.
    pub fn kubelet_client(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let params = self.client_params(&format!("system:node:{name}"), "system:nodes");
        let cert = params.signed_by(&key, &self.issuer).expect("kubelet client certificate");
        (cert.pem(), sec1_pem(&key.serialize_der()))
    }

    fn client_params(&self, cn: &str, org: &str) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, org);
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params
    }
}

/// An EC key's PKCS#8 DER as SEC1 PEM, the way Go's
/// `x509.MarshalECPrivateKey` writes it (the kubelet's
/// `kubelet-client-current.pem`): the inner ECPrivateKey with the curve's
/// OID put back as `[0] parameters`.
fn sec1_pem(pkcs8: &[u8]) -> String {
    const P256: [u8; 12] = [0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (_, info, _) = der::tlv(pkcs8);
    let (_, _version, rest) = der::tlv(info);
    let (_, _algorithm, rest) = der::tlv(rest);
    let (_, ec_private_key, _) = der::tlv(rest);
    let (_, fields, _) = der::tlv(ec_private_key);
    let (version, rest) = der::split(fields);
    let (secret, public) = der::split(rest);
    let body = [version, secret, &P256, public].concat();
    let mut out = vec![0x30];
    out.extend(der::length(body.len()));
    out.extend(body);
    let b64 = STANDARD.encode(out);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64")).collect();
    format!("-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n", lines.join("\n"))
}

/// Just enough DER for the stand-in: the key above and a certificate's
/// subject.
mod der {
    /// The first TLV of `input`: its tag, its content and what follows.
    pub fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let (head, len) = match input[1] {
            n if n < 0x80 => (2, usize::from(n)),
            n => {
                let k = usize::from(n & 0x7f);
                (2 + k, input[2..2 + k].iter().fold(0, |acc, b| acc << 8 | usize::from(*b)))
            }
        };
        (input[0], &input[head..head + len], &input[head + len..])
    }

    /// The first TLV whole, and what follows.
    pub fn split(input: &[u8]) -> (&[u8], &[u8]) {
        let (_, _, rest) = tlv(input);
        input.split_at(input.len() - rest.len())
    }

    pub fn length(n: usize) -> Vec<u8> {
        match n {
            0..0x80 => vec![n as u8],
            0x80..0x100 => vec![0x81, n as u8],
            _ => vec![0x82, (n >> 8) as u8, n as u8],
        }
    }

    /// The subject's common name and organization of a DER certificate.
    pub fn subject(cert: &[u8]) -> (String, String) {
        const CN: [u8; 3] = [0x55, 0x04, 0x03];
        const O: [u8; 3] = [0x55, 0x04, 0x0a];
        let (_, cert, _) = tlv(cert);
        let (_, mut tbs, _) = tlv(cert);
        if tbs[0] == 0xa0 {
            tbs = tlv(tbs).2;
        }
        // serial, signature algorithm, issuer, validity, then the subject
        for _ in 0..4 {
            tbs = tlv(tbs).2;
        }
        let (_, mut rdns, _) = tlv(tbs);
        let (mut cn, mut o) = (String::new(), String::new());
        while !rdns.is_empty() {
            let (_, set, rest) = tlv(rdns);
            let (_, pair, _) = tlv(set);
            let (_, oid, value) = tlv(pair);
            let text = String::from_utf8_lossy(tlv(value).1).into_owned();
            if oid == CN {
                cn = text;
            } else if oid == O {
                o = text;
            }
            rdns = rest;
        }
        (cn, o)
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
    nodes: Arc<Mutex<BTreeSet<String>>>,
    node_gets: Arc<Mutex<Vec<(String, u16)>>>,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl ApiServer {
    /// cluster-info requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Makes `name` a Node the cluster has, as the kubelet's registration
    /// would.
    pub fn register(&self, name: &str) {
        self.nodes.lock().expect("nodes").insert(name.to_owned());
    }

    /// Signs cluster-info for one more token, as the bootstrap signer does
    /// for a token `kubeadm token create` made.
    pub fn add_token(&self, token: &str) {
        self.tokens.lock().expect("tokens").push(token.to_owned());
    }

    /// Every `GET /api/v1/nodes/<name>` so far: the path and the status
    /// answered.
    pub fn node_gets(&self) -> Vec<(String, u16)> {
        self.node_gets.lock().expect("node gets").clone()
    }
}

/// The detached JWS kube-controller-manager's bootstrap signer stores.
pub fn sign_detached(content: &str, token_id: &str, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{header}.{}", URL_SAFE_NO_PAD.encode(content)).as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The ConfigMap as kube-apiserver returns it, signed for every token as
/// kube-controller-manager's bootstrap signer does.
pub fn cluster_info(ca_pem: &str, server: &str, tokens: &[String], serve: Serve) -> String {
    let kubeconfig = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: \"\"\n\
         contexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        STANDARD.encode(ca_pem)
    );
    let mut data = serde_json::Map::new();
    for token in tokens {
        let (id, secret) = token.split_once('.').expect("id.secret");
        let (kid, signed_with) = match serve {
            Serve::NoSignature => ("zzzzzz", "0000000000000000"),
            Serve::WrongSecret => (id, "wrongwrongwrong0"),
            Serve::Good | Serve::OtherCa => (id, secret),
        };
        data.insert(format!("jws-kubeconfig-{kid}"), sign_detached(&kubeconfig, kid, signed_with).into());
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

/// Serves cluster-info for `ca` and `token` on `addr` (port 0 picks one),
/// and the Nodes registered with [`ApiServer::register`].
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
    let acceptor = acceptor(cert, &key);
    let api = Arc::new(Api {
        ca_pem: ca.cert_pem.clone(),
        server: format!("https://{bound}"),
        serve,
        tokens: Arc::new(Mutex::new(vec![token.to_owned()])),
        client_ca: client_verifier(&ca.cert_pem),
        requests: Arc::new(AtomicUsize::new(0)),
        nodes: Arc::new(Mutex::new(BTreeSet::new())),
        node_gets: Arc::new(Mutex::new(Vec::new())),
    });
    let server = ApiServer {
        addr: bound,
        requests: api.requests.clone(),
        nodes: api.nodes.clone(),
        node_gets: api.node_gets.clone(),
        tokens: api.tokens.clone(),
    };
    bg.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, api) = (acceptor.clone(), api.clone());
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
                let peer = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec);
                let (status, body) = api.answer(path, peer.as_deref());
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    server
}

/// What the stand-in serves, and what it has seen.
struct Api {
    ca_pem: String,
    server: String,
    serve: Serve,
    tokens: Arc<Mutex<Vec<String>>>,
    client_ca: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    requests: Arc<AtomicUsize>,
    nodes: Arc<Mutex<BTreeSet<String>>>,
    node_gets: Arc<Mutex<Vec<(String, u16)>>>,
}

/// Who a request is, as kube-apiserver's authentication decides.
enum Who {
    /// No client certificate: with `--anonymous-auth=true` (kube-apiserver's
    /// default, which kubeadm keeps) the request goes on as
    /// `system:anonymous` in `system:unauthenticated`.
    Anonymous,
    /// A certificate from the client CA: the user is its CN, the groups its O.
    User { name: String, group: String },
}

impl Api {
    /// The status line and body for GET `path`.
    fn answer(&self, path: &str, peer: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> (String, String) {
        if path == CLUSTER_INFO {
            // Readable by anyone: kubeadm binds system:anonymous to the
            // kubeadm:bootstrap-signer-clusterinfo Role.
            self.requests.fetch_add(1, Ordering::SeqCst);
            let tokens = self.tokens.lock().expect("tokens").clone();
            return ("200 OK".into(), cluster_info(&self.ca_pem, &self.server, &tokens, self.serve));
        }
        let Some(name) = path.split('?').next().and_then(|p| p.strip_prefix("/api/v1/nodes/")) else {
            return (
                "404 Not Found".into(),
                status(404, "NotFound", "the server could not find the requested resource", None),
            );
        };
        let (code, body) = self.node(name, peer);
        self.node_gets.lock().expect("node gets").push((format!("/api/v1/nodes/{name}"), code));
        let reason = match code {
            200 => "OK",
            401 => "Unauthorized",
            403 => "Forbidden",
            _ => "Not Found",
        };
        (format!("{code} {reason}"), body)
    }

    /// GET a Node, through authentication and authorization as
    /// kube-apiserver (`--authorization-mode=Node,RBAC`, kubeadm's) does.
    fn node(&self, name: &str, peer: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> (u16, String) {
        let details = serde_json::json!({"name": name, "kind": "nodes"});
        let who = match peer {
            None | Some([]) => Who::Anonymous,
            Some([leaf, intermediates @ ..]) => {
                // The x509 authenticator's error is final: the union is
                // wrapped in NewFailOnError before the anonymous
                // authenticator (pkg/kubeapiserver/authenticator/config.go),
                // so a certificate the client CA did not sign is 401, not
                // anonymous.
                let now = rustls::pki_types::UnixTime::now();
                if self.client_ca.verify_client_cert(leaf, intermediates, now).is_err() {
                    return (401, status(401, "Unauthorized", "Unauthorized", None));
                }
                let (name, group) = der::subject(leaf);
                Who::User { name, group }
            }
        };
        let user = match who {
            // The Node authorizer lets a node's identity get any Node
            // (NodeRules in plugin/pkg/auth/authorizer/rbac/bootstrappolicy/
            // policy.go: create/get/list/watch nodes).
            Who::User { name: user, group } if user.starts_with("system:node:") && group == "system:nodes" => {
                return if self.nodes.lock().expect("nodes").contains(name) {
                    (200, node_object(name))
                } else {
                    (404, status(404, "NotFound", &format!("nodes \"{name}\" not found"), Some(details)))
                };
            }
            Who::User { name: user, .. } => user,
            Who::Anonymous => "system:anonymous".to_owned(),
        };
        // Nothing in kubeadm's RBAC grants nodes to anyone else: 403.
        let message = format!(
            "nodes \"{name}\" is forbidden: User \"{user}\" cannot get resource \"nodes\" in API group \"\" at the \
             cluster scope"
        );
        (403, status(403, "Forbidden", &message, Some(details)))
    }
}

/// A `Status` object as kube-apiserver returns it with an error.
fn status(code: u16, reason: &str, message: &str, details: Option<serde_json::Value>) -> String {
    let mut s = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s.to_string()
}

fn node_object(name: &str) -> String {
    serde_json::json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    })
    .to_string()
}

/// kube-apiserver's TLS: client certificates are asked for but not
/// required, and not checked in the handshake (Go's
/// `tls.RequestClientCert`); the x509 authenticator judges them later.
fn acceptor(cert: rustls::pki_types::CertificateDer<'static>, key: &rcgen::KeyPair) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(Arc::new(Requested(provider)))
        .with_single_cert(vec![cert], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The x509 authenticator's check: signed by the client CA, valid now,
/// for client authentication.
fn client_verifier(ca_pem: &str) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM")).expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().expect("verifier")
}

/// Takes any client certificate in the handshake (its signatures are
/// still checked), as Go's `RequestClientCert` does.
#[derive(Debug)]
struct Requested(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for Requested {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
