//! A MAAS region API stand-in for `node-image upload`: HTTP (hyper) at
//! `/MAAS/api/2.0/`, answering `POST boot-resources/`, `GET
//! boot-resources/{id}/` and `PUT boot-resources/{id}/upload/{file}/` in
//! MAAS's JSON layout. It checks every request's OAuth 1.0 PLAINTEXT header
//! the way MAAS does (key, token, signature, timestamp window, nonce not
//! seen before), stores the chunks in order, and checks the reassembled
//! sha256 as MAAS does when the last byte arrives. Faults can be set on any
//! PUT: a connection dropped before or after the chunk is stored, or a 503.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::net::Background;

/// What a PUT does, by its index among all PUTs the stand-in received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads the chunk, drops it, and closes the connection unanswered.
    DropBeforeStore,
    /// Stores the chunk, then closes the connection unanswered.
    DropAfterStore,
    /// Answers 503 and stores nothing.
    Unavailable,
}

/// One PUT as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// Bytes the file held when the chunk arrived.
    pub offset: u64,
    pub len: usize,
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub id: u64,
    pub name: String,
    pub architecture: String,
    pub title: String,
    pub base_image: String,
    pub filetype: String,
    pub sha256: String,
    pub size: u64,
    pub data: Vec<u8>,
    pub complete: bool,
}

#[derive(Default)]
struct State {
    consumer: String,
    token: String,
    secret: String,
    resources: Vec<Resource>,
    nonces: HashSet<String>,
    requests: Vec<String>,
    auth_failures: Vec<String>,
    puts: Vec<Put>,
    faults: BTreeMap<usize, Fault>,
    /// POSTs still to answer 503.
    failing_creates: usize,
}

pub struct Maas {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Maas {
    /// Listens on a loopback port; `key` is `consumer:token:secret`.
    pub fn start(bg: &Background, key: &str) -> Self {
        Self::serve(bg, key, None)
    }

    /// The same over TLS, with a certificate for 127.0.0.1 from `ca` (as a
    /// region with its own CA serves https on 5443).
    pub fn start_tls(bg: &Background, key: &str, ca: &crate::kube::ClusterCa) -> Self {
        let (cert, cert_key) = ca.leaf("127.0.0.1".parse().expect("ip"));
        Self::serve(bg, key, Some(crate::net::tls_acceptor(cert, &cert_key)))
    }

    fn serve(bg: &Background, key: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let [consumer, token, secret] = key.split(':').collect::<Vec<_>>()[..] else { panic!("key {key:?}") };
        let state = Arc::new(Mutex::new(State {
            consumer: consumer.to_owned(),
            token: token.to_owned(),
            secret: secret.to_owned(),
            ..State::default()
        }));
        let listener = bg.listen("127.0.0.1:0".parse().expect("addr"));
        let addr = listener.local_addr().expect("addr");
        let shared = state.clone();
        bg.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => connection(state, stream).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                connection(state, stream).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, state }
    }

    /// The URL an operator passes as `--maas`.
    pub fn url(&self) -> String {
        format!("http://{}/MAAS", self.addr)
    }

    /// The same for a stand-in started with `start_tls`.
    pub fn https_url(&self) -> String {
        format!("https://{}/MAAS", self.addr)
    }

    /// The `index`-th PUT (from 0, across the stand-in's life) meets `fault`.
    pub fn fault(&self, index: usize, fault: Fault) {
        self.lock().faults.insert(index, fault);
    }

    /// The next `n` creates answer 503, as a region that is starting does.
    pub fn fail_creates(&self, n: usize) {
        self.lock().failing_creates = n;
    }

    pub fn puts(&self) -> Vec<Put> {
        self.lock().puts.clone()
    }

    /// "METHOD PATH" of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Why requests were refused as unauthorised.
    pub fn auth_failures(&self) -> Vec<String> {
        self.lock().auth_failures.clone()
    }

    pub fn resources(&self) -> Vec<Resource> {
        self.lock().resources.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("MAAS stand-in state")
    }
}

/// One HTTP/1.1 connection; a fault drops it unanswered.
async fn connection<S>(state: Arc<Mutex<State>>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(tokio::sync::Notify::new());
    let k = kill.clone();
    let service = hyper::service::service_fn(move |req| handle(state.clone(), k.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    // Dropping the connection closes the socket unanswered.
    tokio::select! {
        _ = conn => {}
        () = kill.notified() => {}
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Answer {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(body.into()))
        .expect("response")
}

fn text(status: StatusCode, body: &str) -> Answer {
    answer(status, "text/plain; charset=utf-8", body.to_owned())
}

/// What a request comes to, decided under the state's lock.
enum Step {
    Reply(Answer),
    /// A create: the form is parsed outside the lock.
    Create(String),
    /// Close the connection without an answer.
    Drop,
}

async fn handle(
    state: Arc<Mutex<State>>,
    kill: Arc<tokio::sync::Notify>,
    req: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let (head, body) = req.into_parts();
    // A body cut short by a dropped connection never reaches a handler,
    // as with MAAS behind its web server.
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(text(StatusCode::BAD_REQUEST, "incomplete body"));
    };
    let step = decide(&mut state.lock().expect("state"), &head, &body);
    match step {
        Step::Reply(a) => Ok(a),
        Step::Create(boundary) => {
            let fields = form(body, boundary).await;
            Ok(create(&mut state.lock().expect("state"), fields))
        }
        Step::Drop => {
            kill.notify_one();
            std::future::pending::<()>().await;
            unreachable!("the connection is dropped");
        }
    }
}

fn decide(st: &mut State, head: &hyper::http::request::Parts, body: &Bytes) -> Step {
    let (method, path, headers) = (&head.method, head.uri.path(), &head.headers);
    st.requests.push(format!("{method} {path}"));
    if let Err(why) = authorise(st, headers.get("authorization").and_then(|v| v.to_str().ok())) {
        st.auth_failures.push(why.clone());
        // MAAS names the token it did not know.
        return Step::Reply(text(StatusCode::UNAUTHORIZED, &format!("Authorization Error: {why}")));
    }
    let Some(rest) = path.strip_prefix("/MAAS/api/2.0/boot-resources/") else {
        return Step::Reply(text(StatusCode::NOT_FOUND, "Unknown API endpoint"));
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let not_found = || Step::Reply(text(StatusCode::NOT_FOUND, "No BootResource matches the given query."));
    match (method, parts.as_slice()) {
        (&Method::POST, []) if st.failing_creates > 0 => {
            st.failing_creates -= 1;
            Step::Reply(text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"))
        }
        (&Method::POST, []) => {
            let boundary = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .and_then(|ct| multer::parse_boundary(ct).ok());
            match boundary {
                Some(b) => Step::Create(b),
                None => Step::Reply(text(StatusCode::BAD_REQUEST, "expected multipart/form-data")),
            }
        }
        (&Method::GET, [id]) => match st.resources.iter().find(|r| r.id.to_string() == *id) {
            Some(r) => Step::Reply(answer(StatusCode::OK, "application/json", describe(r).to_string())),
            None => not_found(),
        },
        (&Method::PUT, [id, "upload", file]) if file == id => {
            let index = st.puts.len();
            let Some(r) = st.resources.iter().position(|r| r.id.to_string() == *id) else {
                return not_found();
            };
            let offset = st.resources[r].data.len() as u64;
            let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            let (outcome, step) = if st.faults.get(&index) == Some(&Fault::Unavailable) {
                ("503".to_owned(), Step::Reply(text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")))
            } else if st.faults.get(&index) == Some(&Fault::DropBeforeStore) {
                ("dropped before storing".to_owned(), Step::Drop)
            } else {
                let stored = store(&mut st.resources[r], body, declared);
                match (st.faults.get(&index), stored) {
                    (Some(Fault::DropAfterStore), Ok(())) => ("stored, then dropped".to_owned(), Step::Drop),
                    (_, Ok(())) => ("stored".to_owned(), Step::Reply(text(StatusCode::OK, "OK"))),
                    (_, Err(why)) => (format!("400 {why}"), Step::Reply(text(StatusCode::BAD_REQUEST, why))),
                }
            };
            st.puts.push(Put { offset, len: body.len(), outcome });
            step
        }
        _ => Step::Reply(text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")),
    }
}

/// MAAS's checks on an OAuth 1.0 PLAINTEXT header: the consumer key and
/// token it issued, the signature `&` + token secret (the consumer secret
/// is empty), a timestamp within five minutes, a nonce never seen before.
fn authorise(st: &mut State, header: Option<&str>) -> Result<(), String> {
    let header = header.ok_or("no Authorization header")?;
    let params = header.strip_prefix("OAuth ").ok_or("not an OAuth header")?;
    let mut fields = BTreeMap::new();
    for p in params.split(',') {
        let (k, v) = p.trim().split_once('=').ok_or_else(|| format!("malformed parameter {p:?}"))?;
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or_else(|| format!("unquoted {k}"))?;
        fields.insert(k.to_owned(), decode(v));
    }
    let get = |k: &str| fields.get(k).cloned().ok_or_else(|| format!("missing {k}"));
    if let Some(v) = fields.get("oauth_version")
        && v != "1.0"
    {
        return Err(format!("oauth_version {v:?}"));
    }
    if get("oauth_signature_method")? != "PLAINTEXT" {
        return Err("only PLAINTEXT signatures are accepted".into());
    }
    if get("oauth_consumer_key")? != st.consumer {
        return Err("Invalid consumer.".into());
    }
    let token = get("oauth_token")?;
    if token != st.token {
        return Err(format!("Invalid access token: {token}"));
    }
    let signature = get("oauth_signature")?;
    let (consumer_secret, token_secret) = signature.split_once('&').ok_or("malformed signature")?;
    if !consumer_secret.is_empty() || decode(token_secret) != st.secret {
        return Err("Invalid signature.".into());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let ts: u64 = get("oauth_timestamp")?.parse().map_err(|_| "malformed oauth_timestamp".to_owned())?;
    if ts.abs_diff(now) > 300 {
        return Err(format!("Expired timestamp: given {ts} and now {now}"));
    }
    let nonce = get("oauth_nonce")?;
    if nonce.is_empty() || !st.nonces.insert(nonce.clone()) {
        return Err(format!("Nonce already used: {nonce}"));
    }
    Ok(())
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

async fn form(body: Bytes, boundary: String) -> BTreeMap<String, String> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut out = BTreeMap::new();
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        out.insert(name, field.text().await.unwrap_or_default());
    }
    out
}

/// `BootResourceForm`: the required fields, then the resource. The same
/// name, architecture and sha256 give back the existing resource (and what
/// it already holds), as MAAS reuses a file with a known sha256.
fn create(st: &mut State, f: BTreeMap<String, String>) -> Answer {
    let mut errors = serde_json::Map::new();
    for k in ["name", "architecture", "sha256", "size"] {
        if f.get(k).is_none_or(String::is_empty) {
            errors.insert(k.to_owned(), json!(["This field is required."]));
        }
    }
    let size = f.get("size").and_then(|s| s.parse::<u64>().ok());
    if size.is_none() && !errors.contains_key("size") {
        errors.insert("size".into(), json!(["Enter a whole number."]));
    }
    if f.get("architecture").is_some_and(|a| a != "amd64/generic") {
        errors.insert(
            "architecture".into(),
            json!([format!("Select a valid choice. {} is not one of the available choices.", f["architecture"])]),
        );
    }
    if !errors.is_empty() {
        return answer(StatusCode::BAD_REQUEST, "application/json", Value::Object(errors).to_string());
    }
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let existing = st.resources.iter().position(|r| r.name == f["name"] && r.architecture == f["architecture"]);
    let r = match existing {
        Some(i) if st.resources[i].sha256 == f["sha256"] => &st.resources[i],
        _ => {
            if let Some(i) = existing {
                st.resources.remove(i);
            }
            let id = st.resources.iter().map(|r| r.id).max().unwrap_or(6) + 1;
            st.resources.push(Resource {
                id,
                name: get("name"),
                architecture: get("architecture"),
                title: get("title"),
                base_image: get("base_image"),
                filetype: get("filetype"),
                sha256: get("sha256"),
                size: size.expect("checked"),
                data: Vec::new(),
                complete: false,
            });
            st.resources.last().expect("pushed")
        }
    };
    answer(StatusCode::CREATED, "application/json", describe(r).to_string())
}

/// `SyncLocalBootResourceFile.append_chunk` and the handler around it.
fn store(r: &mut Resource, chunk: &[u8], declared: Option<usize>) -> Result<(), &'static str> {
    if chunk.is_empty() {
        return Err("Missing data.");
    }
    if declared != Some(chunk.len()) {
        return Err("Content-Length doesn't equal size of received data.");
    }
    if r.complete {
        return Err("Cannot upload to a complete file.");
    }
    if r.data.len() as u64 + chunk.len() as u64 > r.size {
        return Err("Too much data received.");
    }
    r.data.extend_from_slice(chunk);
    if r.data.len() as u64 == r.size {
        if crate::hex(&Sha256::digest(&r.data)) != r.sha256 {
            r.data.clear();
            return Err("Saved content does not match given SHA256 value.");
        }
        r.complete = true;
    }
    Ok(())
}

/// `boot_resource_to_dict(resource, with_sets=True)`.
fn describe(r: &Resource) -> Value {
    let progress = 100.0 * r.data.len() as f64 / r.size.max(1) as f64;
    let mut file = json!({
        "filename": "root-tgz", "filetype": "root-tgz", "sha256": r.sha256,
        "filename_on_disk": format!("{}-{}", &r.sha256[..7.min(r.sha256.len())], r.size),
        "size": r.size, "complete": r.complete,
    });
    let mut set = json!({"version": "20261121", "label": "uploaded", "size": r.size, "complete": r.complete});
    if !r.complete {
        file["progress"] = json!(progress);
        file["upload_uri"] = json!(format!("/MAAS/api/2.0/boot-resources/{}/upload/{}/", r.id, r.id));
        set["progress"] = json!(progress);
    }
    set["files"] = json!({"root-tgz": file});
    json!({
        "id": r.id, "type": "Uploaded", "name": r.name, "architecture": r.architecture,
        "resource_uri": format!("/MAAS/api/2.0/boot-resources/{}/", r.id),
        "last_deployed": null, "title": r.title, "base_image": r.base_image,
        "subarches": "generic", "sets": {"20261121": set},
    })
}
