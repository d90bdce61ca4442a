//! A MAAS region API stand-in for `node-image upload`: HTTP (hyper) at
//! `/MAAS/api/2.0/`, answering `POST boot-resources/`, `GET
//! boot-resources/{id}/`, `PUT boot-resources/{id}/upload/{file}/` and `GET
//! regioncontrollers/` in MAAS's JSON layout. It checks every request's
//! OAuth 1.0 PLAINTEXT header the way MAAS does (key, token, signature,
//! timestamp window, nonce not seen before), and plays one release
//! ([`Version`]): up to 3.4 the bytes of a file are one large object that
//! every create of the same sha256 shares, from 3.5 each region controller
//! holds and counts its own copy, and `progress` is computed as that
//! release computes it. The sha256 is checked as MAAS does when the last
//! byte arrives. Faults can be set on any PUT: a connection dropped before
//! or after the chunk is stored, a 503, or no answer ever. This file is the
//! server and its routing; `oauth.rs` the key check, `resources.rs` the
//! boot-resources handlers, `store.rs` what each release keeps. `status.rs`
//! is the metadata service a deployed node reports to, on a port of its own.
//! For `node-init up` and `down`, `fleet.rs` holds the machines, subnets
//! and addresses and moves them on the stand-in's own timer, `region.rs`
//! routes to their handlers in `machines.rs`, `ipaddresses.rs` and
//! `events.rs`.

mod events;
mod fleet;
mod ipaddresses;
mod machines;
mod oauth;
mod region;
mod resources;
mod status;
mod store;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

pub use self::fleet::{Deploy, Event, MachineSpec, MachineView, Script};
pub use self::resources::Resource;
pub use self::status::{Logged, Metadata, NodeStatus, Stored};
pub use self::store::Version;
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
    /// Reads the chunk, stores nothing and never answers: a run the
    /// operator interrupts while it waits.
    Hang,
}

/// One PUT as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The byte the chunk was to land at: the bytes the file held (in the
    /// database up to 3.4, in the stand-in's region from 3.5) when it came.
    pub offset: u64,
    /// The file it was sent to.
    pub file: u64,
    pub len: usize,
    pub outcome: String,
}

struct State {
    key: oauth::Key,
    store: store::Store,
    requests: Vec<String>,
    auth_failures: Vec<String>,
    puts: Vec<Put>,
    faults: BTreeMap<usize, Fault>,
    /// POSTs still to answer 503.
    failing_creates: usize,
    fleet: fleet::Fleet,
}

pub struct Maas {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Maas {
    /// Listens on a loopback port; `key` is `consumer:token:secret`. Plays
    /// MAAS 3.3 with one region controller.
    pub fn start(bg: &Background, key: &str) -> Self {
        Self::serve(bg, key, None, Version::default())
    }

    /// The same, playing `version`.
    pub fn start_as(bg: &Background, key: &str, version: Version) -> Self {
        Self::serve(bg, key, None, version)
    }

    /// The same over TLS, with a certificate for 127.0.0.1 from `ca` (as a
    /// region with its own CA serves https on 5443).
    pub fn start_tls(bg: &Background, key: &str, ca: &crate::kube::ClusterCa) -> Self {
        let (cert, cert_key) = ca.leaf("127.0.0.1".parse().expect("ip"));
        Self::serve(bg, key, Some(crate::net::tls_acceptor(cert, &cert_key)), Version::default())
    }

    fn serve(bg: &Background, key: &str, tls: Option<tokio_rustls::TlsAcceptor>, version: Version) -> Self {
        let state = Arc::new(Mutex::new(State {
            key: oauth::Key::parse(key),
            store: store::Store::new(version),
            requests: Vec::new(),
            auth_failures: Vec::new(),
            puts: Vec::new(),
            faults: BTreeMap::new(),
            failing_creates: 0,
            fleet: fleet::Fleet::new(),
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
        resources::view(&self.lock().store)
    }

    /// From 3.5: the other region controllers copy every file one of them
    /// holds whole, as MAAS's sync does shortly after an upload ends.
    pub fn sync_regions(&self) {
        self.lock().store.sync_regions();
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
    /// Keep the connection without ever answering.
    Hang,
    /// Done, but answered only after a while.
    Late(Answer, std::time::Duration),
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
        Step::Late(a, d) => {
            tokio::time::sleep(d).await;
            Ok(a)
        }
        Step::Create(boundary) => {
            let fields = resources::form(body, boundary).await;
            Ok(resources::create(&mut state.lock().expect("state").store, fields))
        }
        Step::Drop => {
            kill.notify_one();
            std::future::pending::<()>().await;
            unreachable!("the connection is dropped");
        }
        Step::Hang => {
            std::future::pending::<()>().await;
            unreachable!("never answered");
        }
    }
}

fn decide(st: &mut State, head: &hyper::http::request::Parts, body: &Bytes) -> Step {
    let (method, path, headers) = (&head.method, head.uri.path(), &head.headers);
    st.requests.push(format!("{method} {path}"));
    if let Err(why) = st.key.authorise(headers.get("authorization").and_then(|v| v.to_str().ok())) {
        st.auth_failures.push(why.clone());
        // MAAS names the token it did not know.
        return Step::Reply(text(StatusCode::UNAUTHORIZED, &format!("Authorization Error: {why}")));
    }
    if path == "/MAAS/api/2.0/regioncontrollers/" && method == Method::GET {
        let regions: Vec<serde_json::Value> = (0..st.store.version.regions)
            .map(|i| {
                serde_json::json!({"system_id": format!("reg{i}"), "hostname": format!("region-{i}"),
                                        "node_type": 4, "node_type_name": "Region and rack controller"})
            })
            .collect();
        return Step::Reply(answer(StatusCode::OK, "application/json", serde_json::Value::from(regions).to_string()));
    }
    let images: Vec<(String, bool)> = resources::view(&st.store).into_iter().map(|r| (r.name, r.complete)).collect();
    let query = head.uri.query().unwrap_or_default();
    if let Some(a) = region::route(&mut st.fleet, &images, method, path, query, body) {
        return match st.fleet.delay_next.take() {
            Some(d) => Step::Late(a, d),
            None => Step::Reply(a),
        };
    }
    let Some(rest) = path.strip_prefix("/MAAS/api/2.0/boot-resources/") else {
        return Step::Reply(text(StatusCode::NOT_FOUND, "Unknown API endpoint"));
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let not_found =
        |what: &str| Step::Reply(text(StatusCode::NOT_FOUND, &format!("No {what} matches the given query.")));
    let resource = |id: &str| id.parse::<u64>().ok().filter(|id| st.store.resources.iter().any(|r| r.id == *id));
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
        (&Method::GET, []) => {
            Step::Reply(answer(StatusCode::OK, "application/json", resources::list(&st.store).to_string()))
        }
        (&Method::GET, [id]) => match resource(id) {
            Some(id) => {
                let body = resources::describe(&st.store, id).to_string();
                Step::Reply(answer(StatusCode::OK, "application/json", body))
            }
            None => not_found("BootResource"),
        },
        (&Method::PUT, [id, "upload", file]) => {
            // `get_object_or_404` on each, as the handler does.
            if resource(id).is_none() {
                return not_found("BootResource");
            }
            let Some(file) = file.parse::<u64>().ok().filter(|f| st.store.files.iter().any(|x| x.id == *f)) else {
                return not_found("BootResourceFile");
            };
            let index = st.puts.len();
            let offset = st.store.before(file);
            let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            let (outcome, step) = if st.faults.get(&index) == Some(&Fault::Unavailable) {
                ("503".to_owned(), Step::Reply(text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")))
            } else if st.faults.get(&index) == Some(&Fault::DropBeforeStore) {
                ("dropped before storing".to_owned(), Step::Drop)
            } else if st.faults.get(&index) == Some(&Fault::Hang) {
                ("never answered".to_owned(), Step::Hang)
            } else {
                let stored = resources::put(&mut st.store, file, body, declared);
                match (st.faults.get(&index), stored) {
                    (Some(Fault::DropAfterStore), Ok(())) => ("stored, then dropped".to_owned(), Step::Drop),
                    (_, Ok(())) => ("stored".to_owned(), Step::Reply(text(StatusCode::OK, "OK"))),
                    (_, Err(why)) => (format!("400 {why}"), Step::Reply(text(StatusCode::BAD_REQUEST, why))),
                }
            };
            st.puts.push(Put { offset, file, len: body.len(), outcome });
            step
        }
        _ => Step::Reply(text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")),
    }
}
