//! One signed HTTP exchange with MAAS, with a deadline and the server's
//! clock.
//!
//! Every request carries a fresh OAuth PLAINTEXT header and ends within the
//! caller's deadline, connect included. MAAS is reached directly, never
//! through the proxy (it is on the node's own network and in NO_PROXY), and
//! a name in its URL is asked of the MAAS DNS, never of glibc. MAAS's API
//! refuses a timestamp more than five minutes from its own clock; like
//! cloud-init's `OauthUrlHelper.exception_cb`, a 401 or 403 that carries a
//! `Date` header teaches the client the skew, and every later request is
//! stamped with the local clock plus that skew.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, Url};

use super::oauth::{self, ApiKey};
use crate::root::Root;

/// A skew change smaller than this is noise (cloud-init's `skew_change_limit`).
const SKEW_NOTICE: i64 = 5;

/// What MAAS answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The status and the body's first line, for a message.
    pub fn brief(&self) -> String {
        let line = self.body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
        let line: String = line.chars().take(200).collect();
        if line.is_empty() { format!("HTTP {}", self.status) } else { format!("HTTP {}: {line}", self.status) }
    }
}

pub struct Client {
    dns: Vec<SocketAddr>,
    tls: rustls::ClientConfig,
    http: tokio::sync::OnceCell<reqwest::Client>,
    /// Seconds to add to the local clock: MAAS's time minus ours.
    skew: AtomicI64,
}

impl Client {
    /// A client that trusts the root's system bundle (for an https MAAS)
    /// and resolves names through `dns` (the MAAS DNS servers).
    pub fn new(root: &Root, dns: &[SocketAddr]) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let bundle = crate::distro::family(root).ok().and_then(|f| root.read_opt(f.bundle()).ok().flatten());
        for der in bundle.and_then(|b| crate::pki::certificates_in_file(&b).ok()).unwrap_or_default() {
            let _ = roots.add(der.into());
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self { dns: dns.to_vec(), tls, http: tokio::sync::OnceCell::new(), skew: AtomicI64::new(0) }
    }

    /// The skew learned so far, in seconds.
    pub fn skew(&self) -> i64 {
        self.skew.load(Ordering::Relaxed)
    }

    /// Sends one request within `timeout`; `Err` says why no answer came
    /// (never quoting the key). Any answer, 4xx and 5xx included, is `Ok`.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        key: &ApiKey,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        self.exchange(method, url, key, body.map(|b| ("application/json", b)), timeout).await
    }

    /// [`Client::send`] with a form body (`application/x-www-form-urlencoded`),
    /// as MAAS's API operations read their parameters (`request.POST`).
    pub async fn send_form(
        &self,
        method: Method,
        url: &Url,
        key: &ApiKey,
        form: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer, String> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        self.exchange(method, url, key, Some(("application/x-www-form-urlencoded", body)), timeout).await
    }

    async fn exchange(
        &self,
        method: Method,
        url: &Url,
        key: &ApiKey,
        body: Option<(&str, String)>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let exchange = async {
            let http = self.http(url, timeout).await?;
            let stamp = u64::try_from(i64::try_from(oauth::timestamp()).unwrap_or(i64::MAX) + self.skew()).unwrap_or(0);
            let mut req = http.request(method.clone(), url.clone()).header("Authorization", key.header_at(stamp));
            if let Some((content_type, body)) = body {
                req = req.header("Content-Type", content_type).body(body);
            }
            let resp = req.send().await.map_err(|e| crate::error::chain(&e))?;
            let status = resp.status().as_u16();
            let date = resp.headers().get("date").and_then(|d| d.to_str().ok()).map(str::to_owned);
            let body = resp.bytes().await.map_err(|e| format!("reading the answer: {}", crate::error::chain(&e)))?;
            if matches!(status, 401 | 403)
                && let Some(date) = date
            {
                self.learn_skew(&date);
            }
            Ok(Answer { status, body: key.redact(&String::from_utf8_lossy(&body)) })
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:.1}s", timeout.as_secs_f64())));
        answer.map_err(|why: String| format!("{method} {}: {}", without_query(url), key.redact(&why)))
    }

    /// MAAS's clock from its `Date` header, as cloud-init learns it.
    fn learn_skew(&self, date: &str) {
        let Ok(remote) = httpdate::parse_http_date(date) else {
            tracing::warn!(date, "MAAS sent a Date header that is not an HTTP date");
            return;
        };
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let skew = secs(remote) - secs(SystemTime::now());
        let old = self.skew.swap(skew, Ordering::Relaxed);
        if (old - skew).abs() > SKEW_NOTICE {
            tracing::warn!(skew_s = skew, "MAAS's clock differs from this node's; OAuth timestamps corrected");
        }
    }

    /// The HTTP client, built at the first request: its name, if the URL
    /// has one, resolved once through the MAAS DNS.
    async fn http(&self, url: &Url, timeout: Duration) -> Result<&reqwest::Client, String> {
        self.http
            .get_or_try_init(|| async {
                let mut b = reqwest::Client::builder()
                    .no_proxy()
                    .http1_only()
                    .tls_backend_preconfigured(self.tls.clone())
                    .connect_timeout(timeout);
                if let Some(host) = url.host_str().filter(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().is_err()) {
                    b = b.resolve(host, SocketAddr::new(self.resolve(host, timeout).await?, 0));
                }
                b.build().map_err(|e| format!("HTTP client: {}", crate::error::chain(&e)))
            })
            .await
    }

    async fn resolve(&self, host: &str, timeout: Duration) -> Result<IpAddr, String> {
        let mut tried = Vec::new();
        for server in &self.dns {
            let answer = crate::dns::Server::new(*server, timeout).addresses(host).await;
            match answer.addresses().first() {
                Some(ip) => return Ok(*ip),
                None => tried.push(format!("{server}: {answer}")),
            }
        }
        if tried.is_empty() {
            return Err(format!("resolving {host}: no DNS server known"));
        }
        Err(format!("resolving {host}: {}", tried.join("; ")))
    }
}

/// A URL for a message: MAAS URLs carry no secret, but a query might.
fn without_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_comes_from_the_date_header() {
        let t = tempfile::tempdir().unwrap();
        let c = Client::new(&Root::new(t.path()).unwrap(), &[]);
        let ahead = SystemTime::now() + Duration::from_secs(3600);
        c.learn_skew(&httpdate::fmt_http_date(ahead));
        assert!((c.skew() - 3600).abs() <= 2, "{}", c.skew());
        c.learn_skew("yesterday");
        assert!((c.skew() - 3600).abs() <= 2, "a bad date changed the skew");
    }

    #[test]
    fn an_answer_is_told_by_its_status_and_first_line() {
        let a = Answer { status: 400, body: "\nMissing parameter(s) origin in status message.\nmore".into() };
        assert_eq!(a.brief(), "HTTP 400: Missing parameter(s) origin in status message.");
        assert_eq!(Answer { status: 503, body: String::new() }.brief(), "HTTP 503");
    }
}
