//! Reaching out: the proxy accepts TCP (`proxy`), and every name in
//! `dns.require` is reachable on 443 (`egress`): through the proxy with
//! HTTP CONNECT when one is configured, else directly, then a TLS handshake
//! verified against the system bundle plus the proxy CA. A failure names the
//! step: proxy refused, CONNECT answered 407 or 403, TLS untrusted, timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use async_trait::async_trait;
use base64::Engine as _;
use futures_util::future::join_all;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Check, Finding, Inputs, every, fail, pass, skip};
use crate::config::values::ProxyUrl;
use crate::dns::Server;

/// The proxy for HTTPS traffic: `proxy.https`, else `proxy.http`.
pub(super) fn proxy<'c>(f: &'c Inputs<'_>) -> Option<&'c ProxyUrl> {
    let p = f.config.proxy.as_ref()?;
    p.https.as_ref().or(p.http.as_ref())
}

/// An address for `host`: itself when an IP, else asked of the MAAS DNS
/// (never glibc's resolver, which a static binary cannot load).
pub(super) async fn resolve(f: &Inputs<'_>, host: &str) -> Result<IpAddr> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let server = f.node.maas_servers.first().context("no DNS server to resolve it")?;
    let answer = Server::new(*server, f.query_timeout).addresses(host).await;
    answer.addresses().first().copied().ok_or_else(|| anyhow!("resolving {host} via {server}: {answer}"))
}

/// Runs one step of a check within `limit`, naming the step on a timeout.
pub(super) async fn step<T>(limit: Duration, name: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow!("{name}: no answer within {}", humantime::format_duration(limit)))?
}

pub(super) async fn connect(f: &Inputs<'_>, addr: SocketAddr, what: &str) -> Result<TcpStream> {
    let name = format!("TCP to {what} {addr}");
    step(f.query_timeout, &name, async {
        TcpStream::connect(addr).await.with_context(|| format!("{what} {addr} refused the connection"))
    })
    .await
}

pub struct Proxy;

#[async_trait]
impl Check for Proxy {
    fn name(&self) -> &'static str {
        "proxy"
    }
    async fn run(&self, f: &Inputs<'_>) -> Result<Finding> {
        let Some(p) = proxy(f) else { return Ok(skip("no proxy configured")) };
        let reached = async {
            let addr = SocketAddr::new(resolve(f, p.host()).await?, p.port());
            connect(f, addr, "the proxy").await?;
            Ok::<_, anyhow::Error>(addr)
        };
        Ok(match reached.await {
            Ok(addr) => pass(format!("proxy {p} accepts TCP at {addr}")),
            Err(e) => fail(format!("{e:#}")),
        })
    }
}

pub struct Egress;

#[async_trait]
impl Check for Egress {
    fn name(&self) -> &'static str {
        "egress"
    }
    async fn run(&self, f: &Inputs<'_>) -> Result<Finding> {
        let names = &f.config.dns.require;
        if names.is_empty() {
            return Ok(skip("dns.require is empty: no endpoint to reach"));
        }
        let tls = match tls_config(f) {
            Ok(c) => Arc::new(c),
            Err(e) => return Ok(fail(format!("{e:#}"))),
        };
        let results = join_all(names.iter().map(|n| reach(f, n.as_str(), tls.clone()))).await;
        let via = proxy(f).map_or_else(|| "directly".to_owned(), |p| format!("through {p}"));
        let results = results.into_iter().zip(names).map(|(r, n)| r.map_err(|e| format!("{n}:443: {e:#}"))).collect();
        Ok(match every(results) {
            Ok(ok) => pass(format!("{} {via}", ok.join(", "))),
            Err(failed) => fail(failed),
        })
    }
}

/// TCP (to the proxy or the host), CONNECT when proxied, then TLS.
async fn reach(f: &Inputs<'_>, host: &str, tls: Arc<rustls::ClientConfig>) -> Result<String> {
    let conn = open_tls(f, host, 443, proxy(f), tls).await?;
    let (_, session) = conn.get_ref();
    let version = session.protocol_version().map_or_else(|| "TLS".into(), |v| format!("{v:?}"));
    Ok(format!("{host}:443 {version} verified"))
}

/// A verified TLS stream to `host:port`: through `via` with CONNECT when
/// it is a proxy, else directly. A failure names its step.
pub(super) async fn open_tls(
    f: &Inputs<'_>,
    host: &str,
    port: u16,
    via: Option<&ProxyUrl>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>> {
    let stream = match via {
        Some(p) => {
            let addr = SocketAddr::new(resolve(f, p.host()).await?, p.port());
            let mut s = connect(f, addr, "the proxy").await?;
            step(f.query_timeout, "CONNECT", tunnel(&mut s, host, port, p)).await?;
            s
        }
        None => connect(f, SocketAddr::new(resolve(f, host).await?, port), host).await?,
    };
    let name = ServerName::try_from(host.to_owned()).map_err(|e| anyhow!("{host:?} is not a TLS server name: {e}"))?;
    let handshake =
        async { tokio_rustls::TlsConnector::from(tls).connect(name, stream).await.map_err(|e| tls_error(&e)) };
    step(f.query_timeout, "TLS handshake", handshake).await
}

fn tls_error(e: &std::io::Error) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("invalid peer certificate") {
        anyhow!("TLS untrusted: {text} (is the proxy's CA in proxy.ca_cert?)")
    } else {
        anyhow!("TLS handshake failed: {text}")
    }
}

/// `CONNECT host:port` and the proxy's verdict on it.
async fn tunnel(s: &mut TcpStream, host: &str, port: u16, p: &ProxyUrl) -> Result<()> {
    let mut req = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: node-init\r\n");
    if let Some(cred) = p.credentials() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cred.expose().as_bytes());
        req.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.context("sending CONNECT to the proxy")?;
    // Read the response head byte by byte: nothing of the tunnel may be
    // consumed before TLS starts.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            bail!("the proxy's answer to CONNECT has no end");
        }
        let b = s.read_u8().await.context("the proxy closed the connection during CONNECT")?;
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.lines().next().unwrap_or_default().trim().to_owned();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    match code {
        "200" => Ok(()),
        "407" if p.credentials().is_some() => bail!("the proxy rejected the credentials in the proxy URL ({status})"),
        "407" => bail!("the proxy wants credentials; put them in the proxy URL ({status})"),
        "403" => bail!("the proxy forbids CONNECT to {host}:{port} ({status})"),
        _ => bail!("the proxy answered CONNECT with {status:?}"),
    }
}

/// Roots: the system bundle of the node (if any) plus the proxy CA.
pub(super) fn tls_config(f: &Inputs<'_>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(family) = crate::distro::family(f.root) {
        let bundle = f.root.read_opt(family.bundle())?.unwrap_or_default();
        let ders = crate::pki::pem_certificates(&bundle).unwrap_or_default();
        roots.add_parsable_certificates(ders.into_iter().map(CertificateDer::from));
    }
    if let Some(ca) = f.config.proxy.as_ref().and_then(|p| p.ca_cert.as_ref()) {
        for der in &ca.der {
            roots.add(CertificateDer::from(der.clone())).context("adding proxy.ca_cert to the TLS roots")?;
        }
    }
    if roots.is_empty() {
        bail!("no trusted CA: no system bundle and no proxy.ca_cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
