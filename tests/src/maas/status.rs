//! MAAS's metadata service for one deployed machine, after MAAS's own
//! handlers, on its own loopback port:
//!
//! - `POST /MAAS/metadata/status/<anything>`: `StatusHandlerResource`
//!   (`metadataserver/api_twisted.py`), a leaf resource, so the system id
//!   in the path is never looked at: the node is the one whose token the
//!   `Authorization` header names. 401 without a header or an
//!   `oauth_token`; 400 for a body that is not ASCII, not JSON, or lacks
//!   `event_type`, `origin`, `name` or `description`; else 204 at once, and
//!   the message is processed after (`StatusWorkerService`): an unknown
//!   token drops it silently, a `timestamp` that is not a number makes
//!   `queueMessage` raise so the request is never answered, and a file
//!   without `path`, with another encoding or compression drops the whole
//!   message (its transaction rolls back). What is kept goes to the node's
//!   event log as `add_event_to_node_event_log` writes it.
//! - `GET /MAAS/metadata/<version>/...`: the Django side
//!   (`metadataserver/api.py`, `MetaDataHandler` and `UserDataHandler`),
//!   full OAuth (piston: a five-minute timestamp window on the stand-in's
//!   own clock, nonces used once), 401 otherwise; every answer has a `Date`.
//!   What cloud-init's MAAS datasource reads (`DS_FIELDS` in
//!   `cloudinit/sources/DataSourceMAAS.py`): `meta-data/instance-id` (the
//!   system id), `meta-data/local-hostname` (the FQDN, domain included),
//!   `meta-data/public-keys` (the owner's SSH keys, one a line: empty
//!   here), `meta-data/vendor-data` and `user-data` (404 when the machine
//!   was deployed without any, as MAAS answers).
//!
//! Stricter than MAAS, to catch a wrong client: the status handler's OAuth
//! is checked in full too (MAAS only looks the token up), and a message
//! that fails it, or posted under another machine's system id, is dropped
//! and listed in [`Metadata::violations`]. Faults: the next N requests
//! answer 503, every answer is held back, the clock runs off, and a body
//! over a size is refused with 413 before MAAS sees it, as the region's
//! front-end web server does with its request-body limit.

use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::oauth::Key;
use crate::net::Background;

/// The machine's status in MAAS, which decides what its event log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Deploying,
    Deployed,
    FailedDeployment,
}

/// One entry of the node's event log (MAAS's `Event`).
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// `DEBUG` or `ERROR`: the events query hides DEBUG unless asked.
    pub level: &'static str,
    /// The event type's description, e.g. "Node post-installation failure".
    pub kind: &'static str,
    /// The event's `name`.
    pub action: String,
    /// `'<origin>' <description>`, as MAAS writes it.
    pub description: String,
    pub created: f64,
}

/// A file MAAS stored from a message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: String,
    pub compression: Option<String>,
    pub data: Vec<u8>,
}

struct State {
    system_id: String,
    key: Key,
    /// The node key as given, `consumer:token:secret`.
    key_text: String,
    token: String,
    status: NodeStatus,
    clock_offset: i64,
    unavailable: usize,
    delay: Duration,
    requests: Vec<String>,
    /// Every status message MAAS answered 204 to, as parsed.
    accepted: Vec<Value>,
    log: Vec<Logged>,
    files: Vec<Stored>,
    violations: Vec<String>,
    /// `meta-data/local-hostname`.
    fqdn: String,
    /// The front end's request-body limit, in bytes.
    max_body: Option<usize>,
    user_data: Option<String>,
    vendor_data: Option<String>,
}

pub struct Metadata {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Metadata {
    /// Serves machine `system_id`, whose node key is `consumer:token:secret`,
    /// Deployed.
    pub fn start(bg: &Background, system_id: &str, key: &str) -> Self {
        Self::start_on(bg, "127.0.0.1:0".parse().expect("addr"), system_id, key)
    }

    /// [`Metadata::start`] on `listen`, e.g. the address a VM guest reaches.
    pub fn start_on(bg: &Background, listen: SocketAddr, system_id: &str, key: &str) -> Self {
        let token = key.split(':').nth(1).expect("consumer:token:secret").to_owned();
        let state = Arc::new(Mutex::new(State {
            system_id: system_id.to_owned(),
            key: Key::parse(key),
            key_text: key.to_owned(),
            token,
            status: NodeStatus::Deployed,
            clock_offset: 0,
            unavailable: 0,
            delay: Duration::ZERO,
            requests: Vec::new(),
            accepted: Vec::new(),
            log: Vec::new(),
            files: Vec::new(),
            violations: Vec::new(),
            fqdn: format!("{system_id}.maas"),
            max_body: None,
            user_data: None,
            vendor_data: None,
        }));
        let listener = bg.listen(listen);
        let addr = listener.local_addr().expect("addr");
        let shared = state.clone();
        bg.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { addr, state }
    }

    /// `http://ADDR/MAAS/metadata/`, as curtin writes `metadata_url`.
    pub fn metadata_url(&self) -> String {
        format!("http://{}/MAAS/metadata/", self.addr)
    }

    /// The machine's status endpoint, as curtin writes it for reporting.
    pub fn status_url(&self) -> String {
        format!("http://{}/MAAS/metadata/status/{}", self.addr, self.lock().system_id)
    }

    /// Writes under `root` the two files curtin leaves a deployed node
    /// (MAAS's `get_curtin_cloud_config`): the datasource and the reporting
    /// webhook, both with this machine's tokens, for this stand-in.
    pub fn curtin_files(&self, root: &std::path::Path) {
        let key = self.lock().key_text.clone();
        let [consumer, token, secret] = key.split(':').collect::<Vec<_>>()[..] else {
            unreachable!("checked at start")
        };
        let tokens = format!("    consumer_key: {consumer}\n    token_key: {token}\n    token_secret: {secret}\n");
        let dir = root.join("etc/cloud/cloud.cfg.d");
        std::fs::create_dir_all(&dir).expect("mkdir cloud.cfg.d");
        let datasource =
            format!("#cloud-config\ndatasource:\n  MAAS:\n{tokens}    metadata_url: {}\n", self.metadata_url());
        std::fs::write(dir.join("90_maas_cloud_config.cfg"), datasource).expect("datasource cfg");
        let reporting = format!(
            "#cloud-config\nreporting:\n  maas:\n{tokens}    endpoint: {}\n    type: webhook\n",
            self.status_url()
        );
        std::fs::write(dir.join("90_maas_cloud_init_reporting.cfg"), reporting).expect("reporting cfg");
    }

    /// What the datasource serves the deployed machine: its FQDN as
    /// `local-hostname`, the user data MAAS was given at deploy, and the
    /// vendor data MAAS generates.
    pub fn serve(&self, fqdn: &str, user_data: &str, vendor_data: Option<&str>) {
        let mut st = self.lock();
        st.fqdn = fqdn.to_owned();
        st.user_data = Some(user_data.to_owned());
        st.vendor_data = vendor_data.map(str::to_owned);
    }

    pub fn set_status(&self, s: NodeStatus) {
        self.lock().status = s;
    }

    pub fn status(&self) -> NodeStatus {
        self.lock().status
    }

    /// The next `n` requests answer 503, as a region behind its proxy does
    /// while it restarts.
    pub fn unavailable(&self, n: usize) {
        self.lock().unavailable = n;
    }

    /// A request whose body is over `bytes` gets 413 Request Entity Too
    /// Large and never reaches MAAS.
    pub fn max_body(&self, bytes: usize) {
        self.lock().max_body = Some(bytes);
    }

    /// Every answer waits `d` first.
    pub fn slow(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// The stand-in's clock runs `secs` ahead of this machine's.
    pub fn clock_offset(&self, secs: i64) {
        self.lock().clock_offset = secs;
    }

    /// "METHOD PATH" of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// How many POSTs reached the status endpoint.
    pub fn posts(&self) -> usize {
        self.lock().requests.iter().filter(|r| r.starts_with("POST /MAAS/metadata/status/")).count()
    }

    /// Every status message answered 204.
    pub fn accepted(&self) -> Vec<Value> {
        self.lock().accepted.clone()
    }

    /// The node's event log.
    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    pub fn files(&self) -> Vec<Stored> {
        self.lock().files.clone()
    }

    /// What a strict MAAS would have refused.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("metadata stand-in state")
    }
}

type Answer = Response<Full<Bytes>>;

/// What a request comes to: an answer now, or none at all.
enum Step {
    Reply(StatusCode, String),
    Never,
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let (head, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (step, delay, now) = {
        let mut st = state.lock().expect("state");
        st.requests.push(format!("{} {}", head.method, head.uri.path()));
        let now = unix_now() + st.clock_offset;
        let step = if st.unavailable > 0 {
            st.unavailable -= 1;
            Step::Reply(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable".into())
        } else if st.max_body.is_some_and(|max| body.len() > max) {
            Step::Reply(StatusCode::PAYLOAD_TOO_LARGE, "413 Request Entity Too Large".into())
        } else {
            route(&mut st, &head, &body, now)
        };
        (step, st.delay, now)
    };
    tokio::time::sleep(delay).await;
    let (status, text) = match step {
        Step::Reply(s, t) => (s, t),
        Step::Never => std::future::pending().await,
    };
    let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    let resp = Response::builder()
        .status(status)
        .header("Date", date)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .expect("response");
    Ok(resp)
}

type Incoming = hyper::body::Incoming;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn route(st: &mut State, head: &hyper::http::request::Parts, body: &Bytes, now: i64) -> Step {
    let path = head.uri.path();
    let auth = head.headers.get("authorization").and_then(|v| v.to_str().ok());
    if let Some(id) = path.strip_prefix("/MAAS/metadata/status/")
        && head.method == Method::POST
    {
        return status(st, id, auth, body);
    }
    let parts: Vec<&str> = path.trim_start_matches("/MAAS/metadata/").split('/').collect();
    match (&head.method, parts.as_slice()) {
        (&Method::GET, [version, rest @ ..]) if !rest.is_empty() => {
            let now = u64::try_from(now).unwrap_or(0);
            if let Err(why) = st.key.authorise_at(auth, now, Some(300)) {
                let why = if why == "Invalid consumer." { "Invalid API key.".to_owned() } else { why };
                return Step::Reply(StatusCode::UNAUTHORIZED, format!("Authorization Error: {why:?}"));
            }
            if !matches!(*version, "latest" | "2012-03-01") {
                return Step::Reply(StatusCode::NOT_FOUND, format!("Unknown metadata version: {version}"));
            }
            let missing =
                |what: &str| Step::Reply(StatusCode::NOT_FOUND, format!("No {what} available for this node."));
            match rest {
                ["meta-data", "instance-id"] => Step::Reply(StatusCode::OK, st.system_id.clone()),
                ["meta-data", "local-hostname"] => Step::Reply(StatusCode::OK, st.fqdn.clone()),
                ["meta-data", "public-keys"] => Step::Reply(StatusCode::OK, String::new()),
                ["meta-data", "vendor-data"] => {
                    st.vendor_data.clone().map_or_else(|| missing("vendor data"), |v| Step::Reply(StatusCode::OK, v))
                }
                ["user-data"] => {
                    st.user_data.clone().map_or_else(|| missing("user data"), |u| Step::Reply(StatusCode::OK, u))
                }
                _ => Step::Reply(StatusCode::NOT_FOUND, "Not Found".into()),
            }
        }
        _ => Step::Reply(StatusCode::NOT_FOUND, "Not Found".into()),
    }
}

/// `StatusHandlerResource.render_POST`, then the worker's processing.
fn status(st: &mut State, path_id: &str, auth: Option<&str>, body: &Bytes) -> Step {
    let Some(token) = auth.and_then(oauth_token) else { return Step::Reply(StatusCode::UNAUTHORIZED, String::new()) };
    let Ok(text) = std::str::from_utf8(body).ok().filter(|t| t.is_ascii()).ok_or(()) else {
        return Step::Reply(StatusCode::BAD_REQUEST, "Status payload must be ASCII-only".into());
    };
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Step::Reply(StatusCode::BAD_REQUEST, format!("Status payload is not valid JSON:\n{text}\n\n"));
    };
    let missing: Vec<&str> =
        ["event_type", "origin", "name", "description"].into_iter().filter(|k| message.get(k).is_none()).collect();
    if !missing.is_empty() {
        return Step::Reply(
            StatusCode::BAD_REQUEST,
            format!("Missing parameter(s) {} in status message.", missing.join(", ")),
        );
    }
    // queueMessage: datetime.fromtimestamp() of anything but a number
    // raises, and the request is never finished.
    if message.get("timestamp").is_some_and(|t| !t.is_number()) {
        return Step::Never;
    }
    st.accepted.push(message.clone());
    let name = &message["name"];
    if token != st.token {
        // The NodeKey lookup finds no node: MAAS drops it without a word.
        st.violations.push(format!("{name}: unknown token, dropped"));
    } else if let Err(why) = st.key.authorise_at(auth, 0, None) {
        st.violations.push(format!("{name}: OAuth: {why}"));
    } else if path_id.trim_end_matches('/') != st.system_id {
        st.violations.push(format!("{name}: posted under system id {path_id:?}"));
    } else if let Err(why) = process(st, &message) {
        st.violations.push(format!("{name}: dropped by MAAS: {why}"));
    }
    Step::Reply(StatusCode::NO_CONTENT, String::new())
}

/// MAAS's `extract_oauth_key_from_auth_header`, whitespace-split branch.
fn oauth_token(header: &str) -> Option<String> {
    header.split_whitespace().find_map(|e| {
        let (k, v) = e.split_once('=')?;
        (k == "oauth_token").then(|| v.trim_end_matches(',').trim_matches('"').to_owned())
    })
}

/// `_processMessage` in one transaction: the log entry and the files are
/// kept together or not at all.
fn process(st: &mut State, m: &Value) -> Result<(), String> {
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let result = m.get("result").and_then(Value::as_str);
    let failed = matches!(result, Some("FAIL" | "FAILURE"));
    let mut files = Vec::new();
    for f in m.get("files").and_then(Value::as_array).into_iter().flatten() {
        let path = f.get("path").and_then(Value::as_str).ok_or("KeyError: 'path'")?;
        let Some(content) = f.get("content").and_then(Value::as_str) else { continue };
        if f.get("encoding").and_then(Value::as_str) != Some("base64") {
            return Err(format!("Invalid encoding: {:?}", f.get("encoding")));
        }
        let raw = base64::engine::general_purpose::STANDARD.decode(content).map_err(|e| format!("binascii: {e}"))?;
        let compression = f.get("compression").and_then(Value::as_str).map(str::to_owned);
        let data = match compression.as_deref() {
            None => raw,
            Some("bzip2") => {
                let mut out = Vec::new();
                bzip2::read::BzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| format!("bz2: {e}"))?;
                out
            }
            Some(other) => return Err(format!("Invalid compression: {other}")),
        };
        files.push(Stored { path: path.to_owned(), compression, data });
    }
    if s("event_type") == "start" || failed {
        let (level, kind) = match (st.status, failed, result) {
            (NodeStatus::Deploying, false, _) => ("DEBUG", "Node installation"),
            (NodeStatus::Deploying, true, _) => ("ERROR", "Node installation failure"),
            (NodeStatus::Deployed, _, Some("FAIL")) => ("ERROR", "Node post-installation failure"),
            _ => ("DEBUG", "Node status event"),
        };
        let created = m.get("timestamp").and_then(Value::as_f64).unwrap_or_else(|| unix_now() as f64);
        let description = format!("'{}' {}", s("origin"), s("description"));
        st.log.push(Logged { level, kind, action: s("name"), description, created });
    }
    st.files.extend(files);
    // A top-level finish that failed fails a deployment in progress.
    if !s("name").contains('/') && s("event_type") == "finish" && failed && st.status == NodeStatus::Deploying {
        st.status = NodeStatus::FailedDeployment;
    }
    Ok(())
}
