//! DNS queries against one named server at a time, so every answer can be
//! reported with the server that gave it: addresses, NXDOMAIN, SERVFAIL or
//! a timeout. hickory's resolver speaks the protocol; glibc's NSS is never
//! loaded, so the static binary resolves the same everywhere.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::root::Root;

mod search;
mod verdict;
pub use search::Search;
pub use verdict::{forward_verdict, reverse_warning};

pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's own list of upstream servers.
pub const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// What one server answered for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Addresses(Vec<IpAddr>),
    /// PTR targets or other names, without the trailing dot.
    Names(Vec<String>),
    /// The name exists but has no record of the asked type.
    NoRecords,
    NxDomain,
    /// Another response code: SERVFAIL, REFUSED...
    Code(String),
    Timeout(Duration),
    Error(String),
}

impl Answer {
    pub fn addresses(&self) -> &[IpAddr] {
        match self {
            Self::Addresses(a) => a,
            _ => &[],
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: Vec<String>| v.join(", ");
        match self {
            Self::Addresses(a) => f.write_str(&list(a.iter().map(ToString::to_string).collect())),
            Self::Names(n) => f.write_str(&list(n.clone())),
            Self::NoRecords => f.write_str("no records (NOERROR, empty answer)"),
            Self::NxDomain => f.write_str("NXDOMAIN"),
            Self::Code(c) => f.write_str(c),
            Self::Timeout(d) => write!(f, "no answer within {}", humantime::format_duration(*d)),
            Self::Error(e) => f.write_str(e),
        }
    }
}

/// One DNS server with its own resolver: no cache, no hosts file, one try
/// per question (callers retry, and report which server failed).
pub struct Server {
    pub addr: SocketAddr,
    timeout: Duration,
    resolver: TokioResolver,
}

impl Server {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        let mut ns = NameServerConfig::new(addr.ip(), true, vec![ConnectionConfig::udp(), ConnectionConfig::tcp()]);
        for c in &mut ns.connections {
            c.port = addr.port();
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        let resolver =
            Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .expect("a resolver from a valid config");
        Self { addr, timeout, resolver }
    }

    /// A and AAAA records of `name`.
    pub async fn addresses(&self, name: &str) -> Answer {
        let Ok(fqdn) = absolute(name) else { return Answer::Error(format!("{name:?} is not a DNS name")) };
        let answer = tokio::time::timeout(self.timeout, self.resolver.lookup_ip(fqdn)).await;
        match answer {
            Err(_) => Answer::Timeout(self.timeout),
            Ok(Ok(ips)) => Answer::Addresses(ips.iter().collect()),
            Ok(Err(e)) => self.failed(e),
        }
    }

    /// PTR records of `ip`.
    pub async fn names(&self, ip: IpAddr) -> Answer {
        self.named(Name::from(ip), RecordType::PTR, |r| match r {
            RData::PTR(p) => Some(p.0.to_utf8()),
            _ => None,
        })
        .await
    }

    /// The SOA of `zone`: its primary server's name.
    pub async fn soa(&self, zone: &str) -> Answer {
        let Ok(name) = absolute(zone) else { return Answer::Error(format!("{zone:?} is not a DNS name")) };
        self.named(name, RecordType::SOA, |r| match r {
            RData::SOA(s) => Some(s.mname.to_utf8()),
            _ => None,
        })
        .await
    }

    async fn named(&self, name: Name, rtype: RecordType, pick: impl Fn(&RData) -> Option<String>) -> Answer {
        match tokio::time::timeout(self.timeout, self.resolver.lookup(name, rtype)).await {
            Err(_) => Answer::Timeout(self.timeout),
            Ok(Err(e)) => self.failed(e),
            Ok(Ok(l)) => {
                let names: Vec<String> = l
                    .answers()
                    .iter()
                    .filter_map(|r| pick(&r.data))
                    .map(|n| n.trim_end_matches('.').to_owned())
                    .collect();
                if names.is_empty() { Answer::NoRecords } else { Answer::Names(names) }
            }
        }
    }

    fn failed(&self, e: NetError) -> Answer {
        match e {
            NetError::Timeout => Answer::Timeout(self.timeout),
            NetError::Dns(DnsError::NoRecordsFound(nr)) if nr.response_code == ResponseCode::NXDomain => {
                Answer::NxDomain
            }
            NetError::Dns(DnsError::NoRecordsFound(nr)) if nr.response_code == ResponseCode::NoError => {
                Answer::NoRecords
            }
            NetError::Dns(DnsError::NoRecordsFound(nr)) => Answer::Code(mnemonic(nr.response_code)),
            NetError::Dns(DnsError::ResponseCode(code)) => Answer::Code(mnemonic(code)),
            other => Answer::Error(other.to_string()),
        }
    }
}

/// The RFC 1035 mnemonic operators know from dig: SERVFAIL, REFUSED...
fn mnemonic(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        other => format!("{other} (rcode {})", u16::from(other)),
    }
}

fn absolute(name: &str) -> Result<Name, ()> {
    let mut n = Name::from_utf8(name).map_err(|_| ())?;
    n.set_fqdn(true);
    Ok(n)
}

/// The nameservers a resolv.conf-style file lists, on port 53.
fn listed(root: &Root, path: &str) -> Vec<SocketAddr> {
    let text = root.read_string_opt(path).ok().flatten().unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// What the rest of the system asks: the root's `/etc/resolv.conf`. On
/// Ubuntu that is systemd-resolved's stub, which answers from `/etc/hosts`
/// and its own cache too.
pub fn system_nameservers(root: &Root) -> Vec<SocketAddr> {
    listed(root, RESOLV_CONF)
}

/// The servers that really answer for the node: resolv.conf's, unless it
/// lists only systemd-resolved's stub (127.0.0.53, 127.0.0.54), whose
/// upstreams (the MAAS DNS servers DHCP or netplan gave) are in
/// `/run/systemd/resolve/resolv.conf`. The stub is never asked for MAAS's
/// zone: cloud-init's `127.0.1.1 <fqdn>` line in /etc/hosts would answer.
pub fn upstream_nameservers(root: &Root) -> Vec<SocketAddr> {
    let system = system_nameservers(root);
    let is_stub = |s: &SocketAddr| matches!(s.ip(), IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && matches!(v4.octets()[3], 53 | 54));
    if !system.is_empty() && system.iter().all(is_stub) {
        let upstream = listed(root, RESOLVED_UPSTREAM);
        if !upstream.is_empty() {
            return upstream;
        }
    }
    system
}

/// Does `names` (PTR targets) name `fqdn`? Case and the trailing dot do not
/// matter.
pub fn names_match(names: &[String], fqdn: &str) -> bool {
    let want = fqdn.trim_end_matches('.');
    names.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        for (p, c) in files {
            root.write(p, c.as_bytes(), 0o644).unwrap();
        }
        (t, root)
    }

    #[test]
    fn behind_resolveds_stub_the_upstreams_are_asked() {
        // Ubuntu's /etc/resolv.conf, as systemd-resolved writes it.
        let (_t, root) = root_with(&[
            (RESOLV_CONF, "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch dc1.example\n"),
            (RESOLVED_UPSTREAM, "nameserver 10.11.12.2\nnameserver 10.11.12.3\nsearch dc1.example\n"),
        ]);
        let want: Vec<SocketAddr> = vec!["10.11.12.2:53".parse().unwrap(), "10.11.12.3:53".parse().unwrap()];
        assert_eq!(upstream_nameservers(&root), want);
        assert_eq!(system_nameservers(&root), vec!["127.0.0.53:53".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn a_plain_resolv_conf_is_used_as_it_is() {
        let (_t, root) =
            root_with(&[(RESOLV_CONF, "nameserver 10.0.0.2\n"), (RESOLVED_UPSTREAM, "nameserver 10.9.9.9\n")]);
        assert_eq!(upstream_nameservers(&root), vec!["10.0.0.2:53".parse::<SocketAddr>().unwrap()]);
        // The stub with no upstream file (resolved not running): the stub it is.
        let (_t, root) = root_with(&[(RESOLV_CONF, "nameserver 127.0.0.53\n")]);
        assert_eq!(upstream_nameservers(&root), vec!["127.0.0.53:53".parse::<SocketAddr>().unwrap()]);
    }
}
