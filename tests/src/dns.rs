//! A DNS server for tests: hickory-server on 127.0.0.1 (a random UDP port)
//! answering for a scripted zone. A test adds records while it runs (MAAS
//! updates its zone late), or a wildcard as a zone file's `*.zone. A`
//! answers every name under it that has no record of its own, or makes the
//! server answer SERVFAIL, or makes it drop every query (a dead server).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    ServFail,
    /// Never answers: queries are read and dropped.
    Silent,
}

#[derive(Default)]
struct Zone {
    /// (lower-case absolute name, type) -> records.
    records: BTreeMap<(String, RecordType), Vec<Record>>,
    /// (lower-case absolute zone, address): `*.zone. A address`.
    wildcards: Vec<(String, IpAddr)>,
    mode: Option<Mode>,
    queries: usize,
}

#[derive(Clone, Default)]
struct Handler(Arc<Mutex<Zone>>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let info = request.request_info().expect("one query");
        let key = (info.query.name().to_string().to_ascii_lowercase(), info.query.query_type());
        let (mode, answers, name_exists) = {
            let mut z = self.0.lock().expect("zone lock");
            z.queries += 1;
            let exists = z.records.keys().any(|(n, _)| *n == key.0);
            let answers = z.records.get(&key).cloned().unwrap_or_default();
            let wild = z.wildcards.iter().find(|(zone, _)| key.0.ends_with(&format!(".{zone}")));
            match wild {
                Some((_, ip)) if !exists => {
                    let data = match ip {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    let fits = data.record_type() == key.1;
                    let rec = fits.then(|| Record::from_rdata(info.query.name().into(), 60, data));
                    (z.mode.unwrap_or(Mode::Answer), rec.into_iter().collect(), true)
                }
                _ => (z.mode.unwrap_or(Mode::Answer), answers, exists),
            }
        };
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        let code = match mode {
            Mode::Silent => {
                return ResponseInfo::from(Header { metadata: meta, counts: HeaderCounts::default() });
            }
            Mode::ServFail => ResponseCode::ServFail,
            Mode::Answer if name_exists => ResponseCode::NoError,
            Mode::Answer => ResponseCode::NXDomain,
        };
        meta.response_code = code;
        let msg = builder.build(meta, answers.iter(), [], [], []);
        response.send_response(msg).await.expect("sending a DNS response")
    }
}

/// The running server; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDns {
    /// On 127.0.0.1, a random port.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("an address"))
    }

    pub fn start_on(addr: SocketAddr) -> Self {
        let handler = Handler::default();
        let zone = handler.0.clone();
        let socket = std::net::UdpSocket::bind(addr).expect("binding a UDP port");
        socket.set_nonblocking(true).expect("non-blocking");
        let addr = socket.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let mut server = Server::new(handler);
                server.register_socket(tokio::net::UdpSocket::from_std(socket).expect("tokio socket"));
                let _ = stopped.await;
                let _ = server.shutdown_gracefully().await;
            });
        });
        Self { addr, zone, stop: Some(stop), thread: Some(thread) }
    }

    fn add(&self, name: &str, data: RData) {
        let mut n = Name::from_str(name).expect("a DNS name");
        n.set_fqdn(true);
        let key = (n.to_string().to_ascii_lowercase(), data.record_type());
        let rec = Record::from_rdata(n, 60, data);
        self.zone.lock().expect("zone lock").records.entry(key).or_default().push(rec);
    }

    /// An A or AAAA record.
    pub fn address(&self, name: &str, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add(name, RData::A(A(v4))),
            IpAddr::V6(v6) => self.add(name, RData::AAAA(AAAA(v6))),
        }
    }

    /// `*.zone. A ip` (or AAAA): every name under `zone` without records
    /// of its own resolves to `ip`.
    pub fn wildcard(&self, zone: &str, ip: IpAddr) {
        let mut n = Name::from_str(zone).expect("a DNS name");
        n.set_fqdn(true);
        self.zone.lock().expect("zone lock").wildcards.push((n.to_string().to_ascii_lowercase(), ip));
    }

    /// A PTR record for `ip` naming `name`.
    pub fn ptr(&self, ip: IpAddr, name: &str) {
        let mut target = Name::from_str(name).expect("a DNS name");
        target.set_fqdn(true);
        self.add(&Name::from(ip).to_string(), RData::PTR(PTR(target)));
    }

    /// The zone's SOA, as MAAS serves it.
    pub fn soa(&self, zone: &str) {
        let mname = Name::from_str(&format!("ns1.{zone}.")).expect("a DNS name");
        let rname = Name::from_str(&format!("root.{zone}.")).expect("a DNS name");
        self.add(zone, RData::SOA(SOA::new(mname, rname, 1, 600, 600, 86400, 30)));
    }

    pub fn mode(&self, mode: Mode) {
        self.zone.lock().expect("zone lock").mode = Some(mode);
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.zone.lock().expect("zone lock").queries
    }

    /// `host:port` for a node-init config.
    pub fn arg(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
