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

use crate::config::Config;
use crate::root::Root;

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

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

/// The nameservers listed in the root's `/etc/resolv.conf`.
pub fn system_nameservers(root: &Root) -> Vec<SocketAddr> {
    let text = root.read_string_opt(RESOLV_CONF).ok().flatten().unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The MAAS DNS servers: `dns.nameservers`, else the system's.
pub fn maas_nameservers(root: &Root, cfg: &Config) -> Vec<SocketAddr> {
    if cfg.dns.nameservers.is_empty() {
        system_nameservers(root)
    } else {
        cfg.dns.nameservers.iter().map(|n| n.0).collect()
    }
}

/// Does `names` (PTR targets) name `fqdn`? Case and the trailing dot do not
/// matter.
pub fn names_match(names: &[String], fqdn: &str) -> bool {
    let want = fqdn.trim_end_matches('.');
    names.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(want))
}
