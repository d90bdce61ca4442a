//! The MAAS boot-resources API, as far as an upload needs it: create a
//! resource (`POST boot-resources/`), read it back (`GET
//! boot-resources/{id}/`), count the region controllers, and `PUT` a chunk
//! to its file's `upload_uri`.
//!
//! Every request is signed with the [`ApiKey`] and every text MAAS sends
//! back is redacted before it reaches a message. A resource's answer is
//! read into a [`ResourceFile`] (`resource.rs`), so the caller sees what it
//! needs and an "unexpected answer from MAAS" error otherwise; the number
//! of region controllers (`GET regioncontrollers/`) is read here too.
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
use super::resource::ResourceFile;

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

    /// The API's root, `…/MAAS/api/2.0/`.
    pub fn api(&self) -> &Url {
        &self.api
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
        let gone = || anyhow!("MAAS has no resource {id} any more (was it deleted during the upload?)");
        ResourceFile::from_resource(&self.resource(id)?.ok_or_else(gone)?)
    }

    /// Resource `id` as MAAS describes it, or `None` when MAAS has no such
    /// resource (any more).
    pub fn resource(&self, id: u64) -> anyhow::Result<Option<Value>> {
        let url = self.api.join(&format!("boot-resources/{id}/")).expect("a relative path");
        let resp = self.signed(self.client.get(url.clone())).send().map_err(|e| anyhow!("GET {url}: {}", chain(&e)))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.json(resp, &format!("GET {url}")).map(Some)
    }

    /// How many region controllers MAAS has (`GET regioncontrollers/`):
    /// from 3.5 a file's progress is shared out over all of them.
    pub fn regions(&self) -> anyhow::Result<u64> {
        let url = self.api.join("regioncontrollers/").expect("a relative path");
        let resp = self.signed(self.client.get(url.clone())).send().map_err(|e| anyhow!("GET {url}: {}", chain(&e)))?;
        let list = self.json(resp, &format!("GET {url}"))?;
        let n = list.as_array().ok_or_else(|| unexpected(format!("GET {url}: not a list")))?.len();
        Ok(n as u64)
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

pub fn unexpected(what: impl fmt::Display) -> anyhow::Error {
    anyhow!("unexpected answer from MAAS: {what}")
}

pub fn excerpt(s: &str) -> String {
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
