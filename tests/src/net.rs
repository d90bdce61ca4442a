//! Network stand-ins: a network namespace joined to the host by a veth pair
//! (the "node" inside, the "network" on the host side), a second host on a
//! link of its own, an HTTP CONNECT proxy, and a TLS server with a
//! certificate from a test CA.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A namespace `ni-PID-N` whose `veth` has 10.201.N.2/24 and a default
/// route via the host side, 10.201.N.1. Removed when dropped.
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub node_if: String,
    pub host_ip: Ipv4Addr,
    pub node_ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (apt-get install iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Removes the namespaces (and with them their veth pairs, whose host ends
/// hold the same 10.201.N.1 addresses) of test runs that were killed
/// before they could clean up.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix("ni-").and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

impl Netns {
    pub fn new() -> Self {
        static STALE: std::sync::Once = std::sync::Once::new();
        STALE.call_once(remove_stale);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // The next 10.201.N.0/24 no other test process holds now.
        let held = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().map(|o| o.stdout).unwrap_or_default();
        let held = String::from_utf8_lossy(&held);
        let n = loop {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            assert!(n < 250, "too many namespaces");
            if !held.contains(&format!(" 10.201.{n}.")) {
                break n;
            }
        };
        // The whole PID (at most 7 digits): `remove_stale` reads it back.
        let pid = std::process::id();
        let ns = Self {
            name: format!("ni-{pid}-{n}"),
            host_if: format!("nh{pid}-{n}"),
            node_if: format!("nn{pid}-{n}"),
            host_ip: Ipv4Addr::new(10, 201, n as u8, 1),
            node_ip: Ipv4Addr::new(10, 201, n as u8, 2),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns.node_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{}/24", ns.host_ip), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ns.ip(&["addr", "add", &format!("{}/24", ns.node_ip), "dev", &ns.node_if]);
        ns.ip(&["link", "set", &ns.node_if, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["route", "add", "default", "via", &ns.host_ip.to_string()]);
        ns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// An address on the host side of the link (another machine on the
    /// node's network, as far as the node can tell).
    pub fn host_address(&self, addr: Ipv4Addr) {
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &self.host_if]);
    }

    /// The host-side `/etc/netns/NAME/` that `ip netns exec` mounts over
    /// `/etc`: where the node's own resolv.conf goes.
    pub fn etc(&self) -> PathBuf {
        let p = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&p).expect("creating /etc/netns/NAME");
        p
    }

    /// Runs `node-init ARGS` inside the namespace.
    pub fn node_init(&self, args: &[&str]) -> Output {
        self.node_init_after("true", args)
    }

    /// Runs `node-init ARGS` inside the namespace after the shell command
    /// `setup`, in a mount and UTS namespace of that run's own: what
    /// `setup` mounts (a tmpfs over /var/lib) or names (`hostname node1`)
    /// is gone when node-init exits, and no other process ever sees it.
    pub fn node_init_after(&self, setup: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "unshare", "--mount", "--uts", "--propagation", "private"])
            .args(["sh", "-ec", &format!("{setup}\nexec \"$0\" \"$@\"")])
            .arg(crate::bin())
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODE_INIT_LOG", "info")
            .output()
            .expect("ip netns exec node-init")
    }
}

/// Another machine on a link of the node's own: a namespace `NODE-p`
/// joined to the node by a veth pair, the node's end `dn` and its own
/// `dp`, each with the same address. Removed when dropped.
pub struct Peer {
    name: String,
    /// The peer's MAC, as `ip` prints it.
    pub mac: String,
}

impl Netns {
    /// A peer holding `addr/24` on a new link where the node holds it too:
    /// an address in use twice.
    pub fn peer_holding(&self, addr: Ipv4Addr) -> Peer {
        let mut peer = Peer { name: format!("{}-p", self.name), mac: String::new() };
        ip(&["netns", "add", &peer.name]);
        self.ip(&["link", "add", "dn", "type", "veth", "peer", "name", "dp", "netns", &peer.name]);
        let cidr = format!("{addr}/24");
        self.ip(&["addr", "add", &cidr, "dev", "dn"]);
        self.ip(&["link", "set", "dn", "up"]);
        ip(&["-n", &peer.name, "addr", "add", &cidr, "dev", "dp"]);
        ip(&["-n", &peer.name, "link", "set", "dp", "up"]);
        let out = Command::new("ip").args(["-n", &peer.name, "-br", "link", "show", "dp"]).output().expect("ip");
        peer.mac = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2).unwrap_or_default().to_owned();
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

/// A tokio runtime on its own thread for stand-in servers; dropping it
/// stops them.
pub struct Background {
    rt: Option<tokio::runtime::Runtime>,
}

impl Background {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        Self { rt: Some(rt) }
    }

    pub fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.rt.as_ref().expect("running").spawn(f);
    }

    /// Binds a TCP listener (inside the runtime) and returns it.
    pub fn listen(&self, addr: SocketAddr) -> tokio::net::TcpListener {
        let rt = self.rt.as_ref().expect("running");
        rt.block_on(tokio::net::TcpListener::bind(addr)).expect("binding a TCP port")
    }
}

impl Default for Background {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// What the proxy stand-in does with a CONNECT.
#[derive(Debug, Clone)]
pub enum ProxyMode {
    /// Tunnels every CONNECT to this address.
    Allow(SocketAddr),
    /// Answers 407 unless `Proxy-Authorization` carries `user:pass`.
    Auth {
        user_pass: String,
        upstream: SocketAddr,
    },
    Forbid,
}

/// A proxy request's head, up to the blank line; `None` if the client
/// leaves first.
async fn request_head(client: &mut tokio::net::TcpStream) -> Option<String> {
    head_of(client).await
}

/// A request's head on any stream, up to the blank line.
pub(crate) async fn head_of<S: tokio::io::AsyncRead + Unpin>(client: &mut S) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(client.read_u8().await.ok()?);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An HTTP CONNECT proxy on `addr`; returns the bound address.
pub fn connect_proxy(bg: &Background, addr: SocketAddr, mode: ProxyMode) -> SocketAddr {
    let listener = bg.listen(addr);
    let addr = listener.local_addr().expect("local addr");
    bg.spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mode = mode.clone();
            tokio::spawn(async move {
                let Some(head) = request_head(&mut client).await else { return };
                let upstream = match &mode {
                    ProxyMode::Allow(up) => Some(*up),
                    ProxyMode::Auth { user_pass, upstream } => {
                        use base64::Engine as _;
                        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass.as_bytes());
                        let want = format!("proxy-authorization: basic {b64}");
                        head.to_ascii_lowercase().contains(&want.to_ascii_lowercase()).then_some(*upstream)
                    }
                    ProxyMode::Forbid => None,
                };
                let Some(up) = upstream else {
                    let reply = match mode {
                        ProxyMode::Forbid => "HTTP/1.1 403 Forbidden\r\n\r\n",
                        _ => "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n\r\n",
                    };
                    let _ = client.write_all(reply.as_bytes()).await;
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(up).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

/// A TLS server on `addr` for `names`, with a certificate signed by a new
/// CA; returns the bound address and the CA as PEM.
pub fn tls_server(bg: &Background, addr: SocketAddr, names: &[&str]) -> (SocketAddr, String) {
    tls_http_server(bg, addr, names, "200 OK")
}

/// The same, answering every request with `status` (`401 Unauthorized`,
/// as registry.k8s.io answers `GET /v2/`) once it has read the request's
/// head, as a registry does.
pub fn tls_http_server(bg: &Background, addr: SocketAddr, names: &[&str], status: &str) -> (SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name.push(rcgen::DnType::CommonName, "node-init test egress CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let acceptor = tls_acceptor(leaf.der().clone(), &key);
    let listener = bg.listen(addr);
    let bound = listener.local_addr().expect("local addr");
    let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
    bg.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    if head_of(&mut tls).await.is_some() {
                        let _ = tls.write_all(answer.as_bytes()).await;
                    }
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (bound, ca_cert.pem())
}

/// A rustls (ring) acceptor serving one certificate with its key.
pub fn tls_acceptor(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: &rcgen::KeyPair,
) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A static HTTP/1.1 file server for `dir` on 127.0.0.1; returns its
/// address and the paths asked for, in order.
pub fn file_server(bg: &Background, dir: PathBuf) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use http_body_util::Full;
    let listener = bg.listen("127.0.0.1:0".parse().expect("addr"));
    let addr = listener.local_addr().expect("local addr");
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    bg.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (dir, seen) = (dir.clone(), seen.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_owned();
                    seen.lock().expect("log").push(format!("{} {path}", req.method()));
                    let file = (!path.contains("..")).then(|| dir.join(path.trim_start_matches('/')));
                    let found = file.and_then(|f| std::fs::read(f).ok());
                    let head = req.method() == hyper::Method::HEAD;
                    let resp = match found {
                        Some(body) => {
                            let len = body.len();
                            hyper::Response::builder()
                                .header("Content-Length", len)
                                .body(Full::new(bytes::Bytes::from(if head { Vec::new() } else { body })))
                        }
                        None => hyper::Response::builder().status(404).body(Full::new(bytes::Bytes::new())),
                    };
                    async move { resp.map_err(|e| e.to_string()) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, log)
}

/// A TLS-intercepting proxy, as corporate proxies are: every CONNECT is
/// answered, the client's TLS is terminated with a certificate for the
/// asked name signed by the proxy's CA, and the plain bytes go to
/// `upstream`. A client that does not trust the CA fails its handshake.
/// Returns the bound address and "CONNECT host:port" per tunnel.
pub fn intercepting_proxy(
    bg: &Background,
    addr: SocketAddr,
    ca_cert_pem: &str,
    ca_key_pem: &str,
    upstream: SocketAddr,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    intercepting_proxy_routes(bg, addr, ca_cert_pem, ca_key_pem, vec![(ANY_HOST.to_owned(), upstream)])
}

/// The route host that catches every CONNECT whose host has no route of
/// its own.
pub const ANY_HOST: &str = "*";

/// The same proxy, with the upstream picked by the CONNECT's host (port
/// ignored; [`ANY_HOST`] catches the rest): one stand-in answering as
/// several hosts, as registry.k8s.io and ghcr.io both go to one registry.
/// A host with no route is logged like any other and answered as squid
/// answers a name it cannot resolve or a target it cannot reach,
/// `503 Service Unavailable` with its error page (squid's
/// `PeerSelector::noteIps` makes `ERR_DNS_FAIL` and
/// `FwdState::connectDone` `ERR_CONNECT_FAIL`, both
/// `Http::scServiceUnavailable`); the client never gets a tunnel.
pub fn intercepting_proxy_routes(
    bg: &Background,
    addr: SocketAddr,
    ca_cert_pem: &str,
    ca_key_pem: &str,
    routes: Vec<(String, SocketAddr)>,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let key = rcgen::KeyPair::from_pem(ca_key_pem).expect("proxy CA key");
    let issuer = Arc::new(rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, key).expect("proxy CA"));
    let routes = Arc::new(routes);
    let listener = bg.listen(addr);
    let bound = listener.local_addr().expect("local addr");
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    bg.spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (issuer, seen, routes) = (issuer.clone(), seen.clone(), routes.clone());
            tokio::spawn(async move {
                let Some(head) = request_head(&mut client).await else { return };
                let Some(target) = head.strip_prefix("CONNECT ").and_then(|r| r.split_whitespace().next()) else {
                    let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
                    return;
                };
                seen.lock().expect("log").push(format!("CONNECT {target}"));
                let host = target.rsplit_once(':').map_or(target, |(h, _)| h).to_owned();
                let Some(upstream) = route(&routes, &host) else {
                    let _ = client.write_all(unreachable_reply(&host).as_bytes()).await;
                    return;
                };
                let key = rcgen::KeyPair::generate().expect("key");
                let Ok(leaf) = rcgen::CertificateParams::new(vec![host]).and_then(|p| p.signed_by(&key, &*issuer))
                else {
                    return;
                };
                let acceptor = tls_acceptor(leaf.der().clone(), &key);
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                let Ok(mut tls) = acceptor.accept(client).await else { return };
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    (bound, log)
}

/// The upstream for `host`: its own route, else the catch-all's.
fn route(routes: &[(String, SocketAddr)], host: &str) -> Option<SocketAddr> {
    let find = |name: &str| routes.iter().find(|(h, _)| h.eq_ignore_ascii_case(name)).map(|(_, a)| *a);
    find(host).or_else(|| find(ANY_HOST))
}

/// Squid's answer to a CONNECT whose host it cannot resolve: the status,
/// its `X-Squid-Error` header and a short error page, then the
/// connection closes.
fn unreachable_reply(host: &str) -> String {
    let body =
        format!("<html><body><p>Unable to determine IP address from host name <q>{host}</q></p></body></html>\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: squid\r\nMime-Version: 1.0\r\n\
         Content-Type: text/html;charset=utf-8\r\nContent-Length: {}\r\nX-Squid-Error: ERR_DNS_FAIL 0\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// IPv6 on a namespace's link: `fd42:201:N::/64`, the host side `::1` and
/// the node `::2`, each without duplicate address detection so that they
/// are usable at once. No IPv6 default route: only the link is reachable.
impl Netns {
    /// The link's /64 prefix, `fd42:201:N::`.
    pub fn ipv6_prefix(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::new(0xfd42, 0x201, u16::from(self.node_ip.octets()[2]), 0, 0, 0, 0, 0)
    }

    /// An address of the link's /64 ending in `last`.
    pub fn ipv6(&self, last: u16) -> std::net::Ipv6Addr {
        let s = self.ipv6_prefix().segments();
        std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, last)
    }

    /// Puts `::1` on the host side and `::2` on the node, both /64.
    pub fn with_ipv6(&self) {
        ip(&["-6", "addr", "add", &format!("{}/64", self.ipv6(1)), "dev", &self.host_if, "nodad"]);
        self.ip(&["-6", "addr", "add", &format!("{}/64", self.ipv6(2)), "dev", &self.node_if, "nodad"]);
    }

    /// An IPv6 address on the host side of the link: another machine that
    /// answers neighbour solicitation for it.
    pub fn host_address_v6(&self, addr: std::net::Ipv6Addr) {
        ip(&["-6", "addr", "add", &format!("{addr}/128"), "dev", &self.host_if, "nodad"]);
    }

    /// The host side's MAC, as `ip` prints it.
    pub fn host_mac(&self) -> String {
        let out = Command::new("ip").args(["-br", "link", "show", &self.host_if]).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2).unwrap_or_default().to_owned()
    }
}
