//! The MAAS region API as an operator's tools speak it: `/api/2.0/`,
//! OAuth 1.0 PLAINTEXT with the operator's key (the one signer in
//! [`super::oauth`]), parameters as form fields, answers as JSON. Each
//! exchange goes through the one HTTP client ([`super::http::Client`]) with
//! a deadline. Reads are retried a few times with jitter (a region behind
//! its proxy answers 502/503 while it restarts); operations that change
//! MAAS (allocate, deploy, reserve, release) are sent once, because a lost
//! answer may hide a done deed: the caller's state decides what a rerun does.
//!
//! `machines` holds the machine calls, `network` subnets, ranges and IP
//! addresses, `images` boot resources, `log` the events query.

pub mod images;
pub mod log;
pub mod machines;
pub mod network;

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use reqwest::{Method, Url};
use serde_json::Value;

use super::http::{Answer, Client};
use super::oauth::ApiKey;
use crate::retry::Backoff;

/// Tries of an idempotent read.
const READS: Backoff = Backoff { first: Duration::from_millis(500), max: Duration::from_secs(4), attempts: 4 };

pub struct Api {
    /// `<MAAS URL>/api/2.0/`.
    base: Url,
    key: ApiKey,
    http: Client,
    timeout: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Api({}, <redacted>)", self.base)
    }
}

impl Api {
    /// The API under `maas` (as `maas login` takes it:
    /// `http://host:5240/MAAS`). `Err` says what is wrong with the URL.
    pub fn new(maas: &str, key: ApiKey, timeout: Duration) -> Result<Self, String> {
        let url = Url::parse(maas).map_err(|e| format!("{maas:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{maas:?} is not an http(s) URL such as http://maas.example:5240/MAAS"));
        }
        if url.query().is_some() || !url.username().is_empty() {
            return Err(format!("{url} carries a query or credentials; give the MAAS URL alone"));
        }
        let mut path = url.path().trim_end_matches('/').to_owned();
        if !path.ends_with("/api/2.0") {
            path.push_str("/api/2.0");
        }
        let mut base = url.clone();
        base.set_path(&format!("{path}/"));
        let host = crate::root::Root::host();
        let http = Client::new(&host, &crate::dns::system_nameservers(&host));
        Ok(Self { base, key, http, timeout })
    }

    /// The region's URL for `path` (relative to `/api/2.0/`) with `query`.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut u = self.base.join(path).expect("API paths are relative URLs");
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    /// A GET whose answer must be 200 with JSON, retried on no answer
    /// and on 5xx.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = self.url(path, query);
        let deadline = tokio::time::Instant::now() + self.timeout * READS.attempts;
        let mut attempt = 1;
        loop {
            let got = self.http.send(Method::GET, &url, &self.key, None, self.timeout).await;
            let retry = match &got {
                Err(_) => true,
                Ok(a) => a.status >= 500,
            };
            if !retry || !READS.wait(attempt, deadline).await {
                let answer = got.map_err(|e| anyhow!("{e}"))?;
                return json(&answer, &format!("GET {}", shown(&url)));
            }
            attempt += 1;
        }
    }

    /// A POST of operation `op` with `form`, sent once; any answer is `Ok`.
    pub(crate) async fn post(&self, path: &str, op: &str, form: &[(&str, &str)]) -> Result<Answer> {
        let url = self.url(path, &[("op", op)]);
        self.http.send_form(Method::POST, &url, &self.key, form, self.timeout).await.map_err(|e| anyhow!("{e}"))
    }

    /// The key works: `GET users/?op=whoami` answers who it belongs to.
    pub async fn whoami(&self) -> Result<String> {
        let v = self.get("users/", &[("op", "whoami")]).await.context("checking the MAAS API key")?;
        Ok(v.get("username").and_then(Value::as_str).unwrap_or("?").to_owned())
    }

    /// The MAAS URL as given, for messages.
    pub fn region(&self) -> String {
        let mut u = self.base.clone();
        u.set_path(self.base.path().trim_end_matches('/').trim_end_matches("/api/2.0"));
        u.to_string()
    }
}

/// An answer's JSON, or an error that says what MAAS said.
pub(crate) fn json(answer: &Answer, what: &str) -> Result<Value> {
    if answer.status == 401 || answer.status == 403 {
        bail!(
            "{what}: MAAS refused the API key ({}); give a working key in MAAS_API_KEY or --api-key (`maas apikey \
             --username USER`)",
            answer.brief()
        );
    }
    if !answer.success() {
        bail!("{what}: {}", answer.brief());
    }
    serde_json::from_str(&answer.body).with_context(|| format!("{what}: the answer is not JSON"))
}

/// A URL for a message, its query kept (MAAS queries hold no secret).
fn shown(url: &Url) -> String {
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::parse("c:t:s").unwrap()
    }

    #[test]
    fn the_api_lives_under_the_maas_url() {
        for (given, base) in [
            ("http://maas.example:5240/MAAS", "http://maas.example:5240/MAAS/api/2.0/"),
            ("http://maas.example:5240/MAAS/", "http://maas.example:5240/MAAS/api/2.0/"),
            ("https://10.0.0.2:5443/MAAS/api/2.0/", "https://10.0.0.2:5443/MAAS/api/2.0/"),
        ] {
            let api = Api::new(given, key(), Duration::from_secs(1)).unwrap();
            assert_eq!(api.base.as_str(), base);
            assert_eq!(api.url("machines/", &[("op", "allocate")]).as_str(), format!("{base}machines/?op=allocate"));
        }
        assert!(Api::new("maas:5240", key(), Duration::from_secs(1)).is_err());
        assert!(Api::new("http://u:p@maas/MAAS", key(), Duration::from_secs(1)).is_err());
    }
}
