//! The MAAS boot-resources API, as far as an upload needs it: create a
//! resource (`POST boot-resources/`), read it back (`GET
//! boot-resources/{id}/`), and `PUT` a chunk to its file's `upload_uri`.
//!
//! Every request is signed with the [`ApiKey`] and every text MAAS sends
//! back is redacted before it reaches a message. MAAS's answers are parsed
//! here ([`ResourceFile`]), so the caller sees what it needs (size, sha256,
//! bytes received) and an "unexpected answer from MAAS" error otherwise.
//! A create is retried on 5xx and connection failures; a chunk says whether
//! it is worth another try ([`Put`]), and the caller decides.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::http::{chain, client, untrusted};
use super::oauth::ApiKey;

/// Attempts per chunk (and for each read of the resource) before giving up.
pub const ATTEMPTS: u32 = 5;

/// 1 s, 2 s, 4 s, 8 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(3))
}

pub struct Maas {
    client: Client,
    key: ApiKey,
    api: Url,
}

/// Why a chunk did not land.
pub enum Put {
    /// Worth another try after asking MAAS where it stands.
    Transient(String),
    /// MAAS said no: retrying would not help.
    Refused(String),
}

impl Maas {
    /// A client for the API at `api` (`…/MAAS/api/2.0/`), trusting
    /// `ca_cert` besides the system's store.
    pub fn new(api: Url, key: ApiKey, ca_cert: Option<&Path>) -> anyhow::Result<Self> {
        Ok(Self { client: client(ca_cert)?, key, api })
    }

    /// Where the chunks of `file` go.
    pub fn upload_url(&self, file: &ResourceFile) -> anyhow::Result<Url> {
        self.api.join(&file.upload_uri).map_err(|e| unexpected(format!("upload_uri {:?}: {e}", file.upload_uri)))
    }

    fn signed(&self, req: RequestBuilder) -> RequestBuilder {
        req.header(reqwest::header::AUTHORIZATION, self.key.header())
    }

    /// Creates the boot resource, or finds the one MAAS already has for the
    /// same sha256, and returns MAAS's description of it.
    pub fn create(&self, fields: &[(&'static str, String)]) -> anyhow::Result<Value> {
        let url = self.api.join("boot-resources/").expect("a relative path");
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let (content_type, body) = form(fields);
            let req = self.client.post(url.clone()).header(reqwest::header::CONTENT_TYPE, content_type).body(body);
            match self.signed(req).send() {
                // A region that is starting or overloaded answers 5xx; the
                // same create again is safe (MAAS reuses a known sha256).
                Ok(resp) if resp.status().is_server_error() => {
                    let status = resp.status();
                    let body = self.key.redact(&resp.text().unwrap_or_default());
                    last = format!("POST {url}: {}", http_error(status, &body));
                }
                Ok(resp) => return self.json(resp, &format!("POST {url}")),
                // A certificate the trust store rejects stays rejected.
                Err(e) if untrusted(&e) => {
                    return Err(anyhow!(
                        "POST {url}: {} (for a region with its own CA, pass it with --ca-cert)",
                        chain(&e)
                    ));
                }
                Err(e) => last = format!("POST {url}: {}", chain(&e)),
            }
            if attempt < ATTEMPTS {
                eprintln!("node-image: {last}; trying again");
                std::thread::sleep(backoff(attempt));
            }
        }
        Err(anyhow!("{last} ({ATTEMPTS} attempts)"))
    }

    /// The file of resource `id` as MAAS sees it now.
    pub fn file(&self, id: u64) -> anyhow::Result<ResourceFile> {
        let url = self.api.join(&format!("boot-resources/{id}/")).expect("a relative path");
        let resp = self.signed(self.client.get(url.clone())).send().map_err(|e| anyhow!("GET {url}: {}", chain(&e)))?;
        ResourceFile::from_resource(&self.json(resp, &format!("GET {url}"))?)
    }

    pub fn put(&self, url: &Url, chunk: &[u8]) -> Result<(), Put> {
        let req = self
            .client
            .put(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(chunk.to_vec());
        let resp = self.signed(req).send().map_err(|e| Put::Transient(format!("PUT {url}: {}", chain(&e))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().unwrap_or_default();
        let why = format!("PUT {url}: {}", http_error(status, &self.key.redact(&body)));
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
        {
            Err(Put::Transient(why))
        } else {
            Err(Put::Refused(why))
        }
    }

    fn json(&self, resp: Response, what: &str) -> anyhow::Result<Value> {
        let status = resp.status();
        let body = resp.text().map_err(|e| anyhow!("{what}: reading the answer: {}", chain(&e)))?;
        let body = self.key.redact(&body);
        if !status.is_success() {
            return Err(anyhow!("{what}: {}", http_error(status, &body)));
        }
        serde_json::from_str(&body).map_err(|e| unexpected(format!("{what}: not JSON ({e}): {}", excerpt(&body))))
    }
}

/// The one file of the newest set of a boot resource, as MAAS describes it.
#[derive(Debug)]
pub struct ResourceFile {
    pub sha256: String,
    pub size: u64,
    pub complete: bool,
    /// Bytes MAAS holds: `progress` is a percentage of `size`.
    pub received: u64,
    upload_uri: String,
}

impl ResourceFile {
    pub fn from_resource(r: &Value) -> anyhow::Result<Self> {
        let bad = |what: &str| anyhow!("unexpected answer from MAAS: {what} in {}", excerpt(&r.to_string()));
        let sets = r.get("sets").and_then(Value::as_object).ok_or_else(|| bad("no sets"))?;
        // Set names are dates (YYYYMMDD[.N]): the newest sorts last.
        let newest = sets.keys().max().ok_or_else(|| bad("no set"))?;
        let files = sets[newest].get("files").and_then(Value::as_object).ok_or_else(|| bad("no files"))?;
        let [(_, f)] = files.iter().collect::<Vec<_>>()[..] else {
            return Err(bad("not exactly one file in the newest set"));
        };
        let size = f.get("size").and_then(Value::as_u64).ok_or_else(|| bad("no file size"))?;
        let complete = f.get("complete").and_then(Value::as_bool).ok_or_else(|| bad("no complete flag"))?;
        let progress = f.get("progress").and_then(Value::as_f64).unwrap_or(0.0);
        let received =
            if complete { size } else { (progress / 100.0 * size as f64).round().clamp(0.0, size as f64) as u64 };
        let upload_uri = match f.get("upload_uri").and_then(Value::as_str) {
            Some(u) => u.to_owned(),
            None if complete => String::new(),
            None => return Err(bad("an incomplete file without upload_uri (is it an uploaded resource?)")),
        };
        Ok(Self {
            sha256: f.get("sha256").and_then(Value::as_str).ok_or_else(|| bad("no file sha256"))?.to_owned(),
            size,
            complete,
            received,
            upload_uri,
        })
    }
}

pub fn unexpected(what: impl fmt::Display) -> anyhow::Error {
    anyhow!("unexpected answer from MAAS: {what}")
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A `multipart/form-data` body (RFC 7578) of text fields, as the maas CLI
/// sends. Built in memory: reqwest's blocking multipart streams the body
/// from another thread, and a refused connection then surfaces as a body
/// error instead of what happened.
fn form(fields: &[(&'static str, String)]) -> (String, Vec<u8>) {
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).expect("the system's random source");
    let boundary = format!("node-image-{}", hex::encode(raw));
    let mut body = String::new();
    for (k, v) in fields {
        body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body.into_bytes())
}

/// An HTTP error as MAAS words it, with what to check for the usual ones.
fn http_error(status: StatusCode, body: &str) -> String {
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (MAAS did not accept the API key: check --api-key or MAAS_API_KEY)",
        StatusCode::FORBIDDEN => " (the key's user may not edit boot resources: it must be an administrator)",
        StatusCode::NOT_FOUND => " (is --maas the MAAS URL, ending in /MAAS?)",
        _ => "",
    };
    let body = excerpt(body);
    // Some answers only repeat the reason phrase.
    if body.is_empty() || Some(body.as_str()) == status.canonical_reason() {
        format!("HTTP {status}{hint}")
    } else {
        format!("HTTP {status}{hint}: {body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_bytes_come_from_progress() {
        let r = |progress: f64, complete: bool| {
            serde_json::json!({"id": 3, "sets": {
                "20261120": {"files": {"root-tgz": {"sha256": "old", "size": 1, "complete": true}}},
                "20261121": {"files": {"root-tgz": {
                    "sha256": "ab", "size": 10_000_019u64, "complete": complete, "progress": progress,
                    "upload_uri": "/MAAS/api/2.0/boot-resources/3/upload/9/"}}}}})
        };
        // 4 MiB of 10 000 019 bytes, as a percentage.
        let f = ResourceFile::from_resource(&r(100.0 * 4_194_304.0 / 10_000_019.0, false)).expect("file");
        assert_eq!((f.received, f.sha256.as_str(), f.complete), (4_194_304, "ab", false));
        assert_eq!(ResourceFile::from_resource(&r(0.0, true)).expect("file").received, 10_000_019);
        let e = ResourceFile::from_resource(&serde_json::json!({"id": 3, "sets": {}})).unwrap_err();
        assert!(e.to_string().contains("no set"), "{e}");
    }

    #[test]
    fn http_errors_say_what_to_check_and_skip_a_bare_reason_phrase() {
        assert_eq!(
            http_error(StatusCode::UNAUTHORIZED, "Unauthorized"),
            "HTTP 401 Unauthorized (MAAS did not accept the API key: check --api-key or MAAS_API_KEY)"
        );
        assert_eq!(
            http_error(StatusCode::BAD_REQUEST, " {\"name\": [\"bad\"]}\n"),
            "HTTP 400 Bad Request: {\"name\": [\"bad\"]}"
        );
        assert_eq!(
            http_error(StatusCode::BAD_GATEWAY, &"x".repeat(400)),
            format!("HTTP 502 Bad Gateway: {}…", "x".repeat(300))
        );
    }

    #[test]
    fn the_form_holds_each_field_between_boundaries() {
        let (content_type, body) = form(&[("name", "custom/pcg".to_owned()), ("size", "10".to_owned())]);
        let boundary = content_type.strip_prefix("multipart/form-data; boundary=").expect(&content_type);
        assert_eq!(
            String::from_utf8(body).expect("text"),
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ncustom/pcg\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n10\r\n--{boundary}--\r\n"
            )
        );
        assert_ne!(form(&[]).0, content_type, "a boundary was reused");
    }
}
