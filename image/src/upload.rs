//! `node-image upload`: a MAAS custom image, uploaded as the maas CLI does
//! (`POST /api/2.0/boot-resources/` with the image's sha256 and size, then
//! the bytes in chunks with `PUT` to the file's `upload_uri`), every request
//! signed with OAuth 1.0 PLAINTEXT. A chunk that fails is retried after
//! asking MAAS how much it holds, so a dropped connection never sends a byte
//! twice, and a second run resumes where an earlier one stopped.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The maas CLI's chunk size.
const CHUNK: usize = 4 << 20;
/// Attempts per chunk (and for each read of the resource) before giving up.
const ATTEMPTS: u32 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per request: a 4 MiB chunk at 1 Mbit/s still fits.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
/// Upload an image to MAAS as a custom boot resource.
///
/// Resumes a partial upload of the same image (same name, architecture and
/// sha256). With IMAGE.sha256 beside the image (as `build` writes it), the
/// image must match it.
pub struct Args {
    /// The MAAS URL, e.g. http://maas.example:5240/MAAS.
    #[arg(long, value_name = "URL")]
    pub maas: String,
    /// The MAAS API key, consumer:token:secret (`maas apikey --username U`).
    /// Prefer the environment variable: arguments are visible in ps.
    #[arg(long, env = "MAAS_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: String,
    /// The boot resource's name, custom/NAME.
    #[arg(long, value_name = "custom/NAME")]
    pub name: String,
    /// The title MAAS shows (default: NAME).
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long, default_value = "amd64/generic", value_name = "ARCH/SUBARCH")]
    pub architecture: String,
    /// The MAAS image the custom image is built on (kernel and OS family).
    #[arg(long, default_value = "ubuntu/jammy", value_name = "OS/RELEASE")]
    pub base_image: String,
    /// A PEM bundle to trust for an https MAAS URL, besides the system's
    /// trust store.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Bytes per PUT request.
    #[arg(long, default_value_t = CHUNK, value_name = "BYTES")]
    pub chunk_size: usize,
    /// The image (a gzip tar, as `build` writes it).
    #[arg(value_name = "IMAGE.tgz")]
    pub image: PathBuf,
}

/// Why an upload did not happen.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments: nothing was read from the image or sent anywhere.
    Usage(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

/// An API key's three parts. The token and secret never reach a message.
struct ApiKey {
    consumer: String,
    token: String,
    secret: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    fn parse(key: &str) -> Result<Self, String> {
        let key = key.trim();
        let parts: Vec<&str> = key.split(':').collect();
        if parts.len() != 3 {
            return Err(format!(
                "--api-key: expected consumer:token:secret (three parts separated by ':'), got {} part(s)",
                parts.len()
            ));
        }
        for (part, what) in parts.iter().zip(["consumer", "token", "secret"]) {
            if part.is_empty() {
                return Err(format!("--api-key: the {what} part is empty"));
            }
            if !part.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("--api-key: the {what} part holds a space or a non-ASCII character"));
            }
        }
        Ok(Self { consumer: parts[0].to_owned(), token: parts[1].to_owned(), secret: parts[2].to_owned() })
    }

    /// The `Authorization` header value, OAuth 1.0 PLAINTEXT (RFC 5849
    /// §3.5.1), with an empty consumer secret as MAAS issues keys.
    fn header(&self) -> String {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).expect("the system's random source");
        let nonce = hex::encode(raw);
        let signature = format!("&{}", encode(&self.secret));
        let fields = [
            ("oauth_version", "1.0"),
            ("oauth_signature_method", "PLAINTEXT"),
            ("oauth_consumer_key", &self.consumer),
            ("oauth_token", &self.token),
            ("oauth_signature", &signature),
            ("oauth_nonce", &nonce),
            ("oauth_timestamp", &timestamp.to_string()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", encode(v)))
        .collect::<Vec<_>>()
        .join(", ");
        format!("OAuth realm=\"OAuth\", {fields}")
    }

    /// MAAS's error texts may quote the token it did not accept.
    fn redact(&self, text: &str) -> String {
        [&self.secret, &self.token, &self.consumer]
            .iter()
            .fold(text.to_owned(), |t, part| t.replace(part.as_str(), "<redacted>"))
    }
}

/// RFC 5849 §3.6: everything but ALPHA, DIGIT, '-', '.', '_', '~'.
const OAUTH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, OAUTH).to_string()
}

/// What the arguments say, checked before anything is read or sent.
struct Plan {
    api: Url,
    key: ApiKey,
    fields: Vec<(&'static str, String)>,
    chunk: usize,
}

fn plan(a: &Args) -> Result<Plan, String> {
    let key = ApiKey::parse(&a.api_key)?;
    let mut base = Url::parse(a.maas.trim()).map_err(|e| format!("--maas {:?}: not a URL: {e}", a.maas))?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(format!("--maas {:?}: expected http(s)://HOST[:PORT]/MAAS", a.maas));
    }
    if !base.username().is_empty() || base.password().is_some() || base.query().is_some() {
        return Err(format!("--maas {:?}: no credentials or query in the URL; the key goes in --api-key", a.maas));
    }
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let api = base.join("api/2.0/").map_err(|e| format!("--maas {:?}: {e}", a.maas))?;
    let short = a.name.strip_prefix("custom/").ok_or_else(|| format!("--name {:?}: expected custom/NAME", a.name))?;
    if short.is_empty() || !short.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err(format!("--name {:?}: NAME may hold letters, digits, '-', '.' and '_' only", a.name));
    }
    for (flag, v) in [("--architecture", &a.architecture), ("--base-image", &a.base_image)] {
        let mut parts = v.split('/');
        let ok = parts.next().is_some_and(|p| !p.is_empty()) && parts.next().is_some_and(|p| !p.is_empty());
        if !ok || parts.next().is_some() {
            return Err(format!("{flag} {v:?}: expected two parts, like amd64/generic or ubuntu/jammy"));
        }
    }
    if a.title.as_deref().is_some_and(|t| t.is_empty() || t.chars().any(char::is_control)) {
        return Err("--title: expected a non-empty line of text".to_owned());
    }
    if a.chunk_size == 0 || a.chunk_size > 1 << 30 {
        return Err(format!("--chunk-size {}: expected 1 byte to 1 GiB", a.chunk_size));
    }
    let fields = vec![
        ("name", a.name.clone()),
        ("title", a.title.clone().unwrap_or_else(|| short.to_owned())),
        ("architecture", a.architecture.clone()),
        ("filetype", "tgz".to_owned()),
        ("base_image", a.base_image.clone()),
    ];
    Ok(Plan { api, key, fields, chunk: a.chunk_size })
}

pub fn run(a: &Args) -> Result<(), Failure> {
    let plan = plan(a).map_err(Failure::Usage)?;
    let (size, sha256) = digest(&a.image)?;
    check_sidecar(&a.image, &sha256)?;
    if size == 0 {
        return Err(Failure::Failed(anyhow!("{}: the image is empty", a.image.display())));
    }
    let client = client(a.ca_cert.as_deref())?;
    let maas = Maas { client, key: plan.key, api: plan.api };

    let mut fields = plan.fields;
    fields.push(("sha256", sha256.clone()));
    fields.push(("size", size.to_string()));
    let created = maas.create(&fields)?;
    let id = created.get("id").and_then(Value::as_u64).ok_or_else(|| unexpected("the new resource has no id"))?;
    let file = ResourceFile::from_resource(&created)?;
    if file.sha256 != sha256 || file.size != size {
        return Err(Failure::Failed(anyhow!(
            "MAAS recorded resource {id} with sha256 {} and size {}, not this image's {sha256} and {size}",
            file.sha256,
            file.size
        )));
    }
    let upload =
        maas.api.join(&file.upload_uri).map_err(|e| unexpected(format!("upload_uri {:?}: {e}", file.upload_uri)))?;
    if file.complete {
        eprintln!("node-image: MAAS already has {} (resource {id}, sha256 {sha256}); nothing to upload", a.name);
        return Ok(());
    }

    let mut image = File::open(&a.image).with_context(|| format!("opening {}", a.image.display()))?;
    let mut offset = file.received;
    if offset > 0 {
        eprintln!("node-image: MAAS holds {offset} of {size} bytes of resource {id}; resuming there");
    }
    let started = Instant::now();
    let mut buf = vec![0u8; plan.chunk];
    let mut failures = 0u32;
    let mut sent_chunks = 0u64;
    // After a failed PUT the chunk may still have landed (the connection
    // can drop after MAAS stored it): only MAAS knows, so ask it rather
    // than send the same bytes twice.
    let mut in_doubt = false;
    loop {
        let attempt = if in_doubt {
            maas.resource(id).and_then(|r| ResourceFile::from_resource(&r).map_err(Failure::Failed)).and_then(|now| {
                if now.received > size {
                    return Err(unexpected(format!("{} bytes received of {size}", now.received)));
                }
                offset = now.received;
                in_doubt = false;
                Ok(())
            })
        } else if offset >= size {
            break;
        } else {
            let len = usize::try_from((size - offset).min(plan.chunk as u64)).expect("a chunk fits in memory");
            image.seek(SeekFrom::Start(offset)).and_then(|_| image.read_exact(&mut buf[..len])).with_context(|| {
                format!("reading {} at byte {offset} (did it change during the upload?)", a.image.display())
            })?;
            match maas.put(&upload, &buf[..len]) {
                Ok(()) => {
                    progress(offset, offset + len as u64, size);
                    offset += len as u64;
                    sent_chunks += 1;
                    failures = 0;
                    Ok(())
                }
                Err(Put::Refused(why)) => {
                    return Err(Failure::Failed(anyhow!(
                        "MAAS refused the chunk at byte {offset} of resource {id}: {why}"
                    )));
                }
                Err(Put::Transient(why)) => {
                    in_doubt = true;
                    Err(Failure::Failed(anyhow!("chunk at byte {offset}: {why}")))
                }
            }
        };
        match attempt {
            Ok(()) => {}
            Err(Failure::Failed(e)) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(Failure::Failed(anyhow!(
                        "giving up at byte {offset} of {size} after {ATTEMPTS} failures in a row, the last: {e:#}; \
                         run the same command again to resume"
                    )));
                }
                let wait = backoff(failures);
                eprintln!("node-image: {e:#}; asking MAAS where the upload stands in {}s", wait.as_secs());
                std::thread::sleep(wait);
            }
            Err(usage) => return Err(usage),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "node-image: uploaded {} to {} as resource {id}: {size} bytes, sha256 {sha256}, {sent_chunks} chunk(s) in {secs:.1}s",
        a.image.display(),
        a.name
    );
    Ok(())
}

/// 1 s, 2 s, 4 s, 8 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(3))
}

/// A line each time the upload passes a tenth of the image.
fn progress(before: u64, done: u64, size: u64) {
    let step = size.div_ceil(10).max(1);
    if done == size || done / step != before / step {
        eprintln!("node-image: {}% ({done} of {size} bytes)", done * 100 / size);
    }
}

fn unexpected(what: impl fmt::Display) -> Failure {
    Failure::Failed(anyhow!("unexpected answer from MAAS: {what}"))
}

fn digest(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok((size, hex::encode(h.finalize())));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

/// IMAGE.sha256 beside the image, when present, must name the same hash.
fn check_sidecar(image: &Path, sha256: &str) -> anyhow::Result<()> {
    let mut side = image.as_os_str().to_owned();
    side.push(".sha256");
    let side = PathBuf::from(side);
    let text = match std::fs::read_to_string(&side) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", side.display())),
    };
    let recorded = text.split_whitespace().next().unwrap_or_default();
    if recorded != sha256 {
        bail!(
            "{} has sha256 {sha256} but {} says {recorded:?}: the image changed after it was built",
            image.display(),
            side.display()
        );
    }
    Ok(())
}

fn client(ca_cert: Option<&Path>) -> anyhow::Result<Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    // A missing or partly unreadable system store is not fatal: an http
    // URL needs none, and --ca-cert may be all an https one needs.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("--ca-cert: reading {}", path.display()))?;
        let mut n = 0;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.with_context(|| format!("--ca-cert: {} is not a PEM bundle", path.display()))?;
            roots.add(cert).with_context(|| format!("--ca-cert: a certificate in {} is unusable", path.display()))?;
            n += 1;
        }
        if n == 0 {
            bail!("--ca-cert: {} holds no certificate", path.display());
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("node-image/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// The one file of the newest set of a boot resource, as MAAS describes it.
#[derive(Debug)]
struct ResourceFile {
    sha256: String,
    size: u64,
    complete: bool,
    /// Bytes MAAS holds: `progress` is a percentage of `size`.
    received: u64,
    upload_uri: String,
}

impl ResourceFile {
    fn from_resource(r: &Value) -> anyhow::Result<Self> {
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

fn excerpt(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

enum Put {
    /// Worth another try after asking MAAS where it stands.
    Transient(String),
    /// MAAS said no: retrying would not help.
    Refused(String),
}

struct Maas {
    client: Client,
    key: ApiKey,
    api: Url,
}

impl Maas {
    fn signed(&self, req: RequestBuilder) -> RequestBuilder {
        req.header(reqwest::header::AUTHORIZATION, self.key.header())
    }

    fn create(&self, fields: &[(&'static str, String)]) -> Result<Value, Failure> {
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
                    return Err(Failure::Failed(anyhow!(
                        "POST {url}: {} (for a region with its own CA, pass it with --ca-cert)",
                        chain(&e)
                    )));
                }
                Err(e) => last = format!("POST {url}: {}", chain(&e)),
            }
            if attempt < ATTEMPTS {
                eprintln!("node-image: {last}; trying again");
                std::thread::sleep(backoff(attempt));
            }
        }
        Err(Failure::Failed(anyhow!("{last} ({ATTEMPTS} attempts)")))
    }

    fn resource(&self, id: u64) -> Result<Value, Failure> {
        let url = self.api.join(&format!("boot-resources/{id}/")).expect("a relative path");
        let resp = self
            .signed(self.client.get(url.clone()))
            .send()
            .map_err(|e| Failure::Failed(anyhow!("GET {url}: {}", chain(&e))))?;
        self.json(resp, &format!("GET {url}"))
    }

    fn put(&self, url: &Url, chunk: &[u8]) -> Result<(), Put> {
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

    fn json(&self, resp: Response, what: &str) -> Result<Value, Failure> {
        let status = resp.status();
        let body = resp.text().map_err(|e| Failure::Failed(anyhow!("{what}: reading the answer: {}", chain(&e))))?;
        let body = self.key.redact(&body);
        if !status.is_success() {
            return Err(Failure::Failed(anyhow!("{what}: {}", http_error(status, &body))));
        }
        serde_json::from_str(&body).map_err(|e| unexpected(format!("{what}: not JSON ({e}): {}", excerpt(&body))))
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

/// Whether the server's certificate was refused. rustls says why, inside
/// io::Errors whose `source()` skips the error they carry, hence `get_ref`.
fn untrusted(e: &reqwest::Error) -> bool {
    fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
        if matches!(err.downcast_ref::<rustls::Error>(), Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        let carried = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        carried.is_some_and(|inner| refused(inner)) || err.source().is_some_and(refused)
    }
    refused(e)
}

/// What went wrong with a request, in words: reqwest's own message only
/// repeats the URL, the innermost cause says what happened.
fn chain(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(c) = cause.source() {
        cause = c;
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "reading the answer"
    } else {
        "the request failed"
    };
    format!("{what}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(key: &str) -> Args {
        Args {
            maas: "http://maas.example:5240/MAAS".into(),
            api_key: key.into(),
            name: "custom/pcg-bookworm".into(),
            title: None,
            architecture: "amd64/generic".into(),
            base_image: "ubuntu/jammy".into(),
            ca_cert: None,
            chunk_size: CHUNK,
            image: "image.tgz".into(),
        }
    }

    #[test]
    fn key_errors_name_the_flag_and_never_the_key() {
        for (key, why) in [
            ("abc:def", "got 2 part(s)"),
            ("abc:def:ghi:jkl", "got 4 part(s)"),
            ("abc::ghi", "token part is empty"),
            ("abc:def:", "secret part is empty"),
            ("abc:d ef:ghi", "token part holds a space"),
        ] {
            let Err(e) = plan(&args(key)) else { panic!("{key:?} accepted") };
            assert!(e.starts_with("--api-key: ") && e.contains(why), "{key:?}: {e}");
            assert!(!e.contains("def") && !e.contains("ghi"), "{key:?}: the error shows the key: {e}");
        }
    }

    #[test]
    fn arguments_are_checked_before_anything_is_sent() {
        let ok = plan(&args("c:t:s")).expect("good arguments");
        assert_eq!(ok.api.as_str(), "http://maas.example:5240/MAAS/api/2.0/");
        assert!(ok.fields.contains(&("title", "pcg-bookworm".to_owned())));
        for (edit, flag) in [
            (&(|a: &mut Args| a.maas = "maas.example".into()) as &dyn Fn(&mut Args), "--maas"),
            (&|a: &mut Args| a.maas = "ftp://maas/MAAS".into(), "--maas"),
            (&|a: &mut Args| a.maas = "http://u:p@maas/MAAS".into(), "--maas"),
            (&|a: &mut Args| a.name = "pcg".into(), "--name"),
            (&|a: &mut Args| a.name = "custom/a/b".into(), "--name"),
            (&|a: &mut Args| a.architecture = "amd64".into(), "--architecture"),
            (&|a: &mut Args| a.base_image = "ubuntu/jammy/x".into(), "--base-image"),
            (&|a: &mut Args| a.chunk_size = 0, "--chunk-size"),
            (&|a: &mut Args| a.title = Some("two\r\nlines".into()), "--title"),
        ] {
            let mut a = args("c:t:s");
            edit(&mut a);
            let e = plan(&a).err().unwrap_or_else(|| panic!("accepted: {a:?}"));
            assert!(e.starts_with(flag), "{flag}: {e}");
        }
    }

    #[test]
    fn the_header_is_oauth_plaintext_with_a_fresh_nonce() {
        let key = ApiKey::parse("cons:tok:s&c/r").expect("key");
        let (a, b) = (key.header(), key.header());
        assert!(a.starts_with("OAuth realm=\"OAuth\", "), "{a}");
        for field in [
            "oauth_version=\"1.0\"",
            "oauth_signature_method=\"PLAINTEXT\"",
            "oauth_consumer_key=\"cons\"",
            "oauth_token=\"tok\"",
            // "&" + secret, percent-encoded once for the signature and once
            // as a header parameter (RFC 5849 §3.4.4, §3.5.1).
            "oauth_signature=\"%26s%2526c%252Fr\"",
        ] {
            assert!(a.contains(field), "{field} missing in {a}");
        }
        let nonce = |h: &str| h.split("oauth_nonce=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned);
        assert_ne!(nonce(&a), nonce(&b), "a nonce was reused");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    }

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
}
