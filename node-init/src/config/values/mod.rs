//! Config values that check themselves when deserialized.
//!
//! Each type parses from a string and says what it expected; secret ones
//! never quote what they were given. Being checked at deserialization time
//! means the error carries the key's path (see `config::parse`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// Implements `Deserialize` through `FromStr` for a type whose error is a
/// message saying what was expected.
macro_rules! from_str_deserialize {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    };
}

/// Same, for secret types: the string is read without echoing a wrong type.
macro_rules! secret_from_str_deserialize {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = crate::secret::deserialize_secret_string(d)?;
                s.expose().parse().map_err(de::Error::custom)
            }
        }
    };
}

mod cluster;
mod peer;
mod proxy;

pub use cluster::{CaHash, CertKey, Held, PemCerts, PemKey, SCRUBBED, Token};
pub use peer::{Peer, PeerRole};
pub use proxy::{NoProxyEntry, ProxyUrl};

fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A DNS name such as `node1.maas`, kept lower case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for DnsName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !is_dns_name(s) {
            return Err(format!(
                "{s:?} is not a DNS name (expected labels of letters, digits and '-', e.g. node1.maas)"
            ));
        }
        Ok(Self(s.trim_end_matches('.').to_ascii_lowercase()))
    }
}
from_str_deserialize!(DnsName);

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A duration written as `30s`, `5m`, `1h30m`; zero is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match humantime::parse_duration(s) {
            Ok(d) if !d.is_zero() => Ok(Self(d)),
            _ => Err(format!("{s:?} is not a duration (expected e.g. 30s, 5m, 1h30m)")),
        }
    }
}
from_str_deserialize!(Dur);

/// A bootstrap token's lifetime, as kubeadm's `ttl`: a duration, where
/// `0s` means the token never expires (which [`Dur`] refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Duration);

impl Ttl {
    pub const DEFAULT: Self = Self(Duration::from_secs(24 * 3600));

    pub fn never_expires(self) -> bool {
        self.0.is_zero()
    }
}

impl Default for Ttl {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for Ttl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "0" {
            return Ok(Self(Duration::ZERO));
        }
        humantime::parse_duration(s)
            .map(Self)
            .map_err(|_| format!("{s:?} is not a token lifetime (expected e.g. 24h, 2h30m, or 0s for never)"))
    }
}
from_str_deserialize!(Ttl);

/// Short, as an operator writes it: `24h`, `1h30m`, `45s`, `0s`.
impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
        let mut out = String::new();
        for (n, unit) in [(h, "h"), (m, "m"), (sec, "s")] {
            if n > 0 {
                out.push_str(&format!("{n}{unit}"));
            }
        }
        f.write_str(if out.is_empty() { "0s" } else { &out })
    }
}

/// A host and a port: `10.11.12.100:6443`, `[fd00::1]:6443`, `api.maas:6443`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not host:port (expected e.g. 10.11.12.100:6443)");
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return if sa.port() == 0 { Err(bad()) } else { Ok(Self { host: sa.ip().to_string(), port: sa.port() }) };
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        if !is_dns_name(host) || host.contains(':') {
            return Err(bad());
        }
        Ok(Self { host: host.to_ascii_lowercase(), port })
    }
}
from_str_deserialize!(Endpoint);

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// A DNS server: an IP address with an optional port (default 53). Names
/// are refused: resolving the resolver would be circular.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameServer(pub SocketAddr);

impl FromStr for NameServer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self(SocketAddr::new(ip, 53)));
        }
        s.parse::<SocketAddr>()
            .ok()
            .filter(|a| a.port() != 0)
            .map(Self)
            .ok_or_else(|| format!("{s:?} is not a nameserver (expected an IP address, optionally with :port)"))
    }
}
from_str_deserialize!(NameServer);

/// An IP network written in CIDR notation, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net: ipnet::IpNet = s.parse().map_err(|_| format!("{s:?} is not a CIDR (expected e.g. 192.168.0.0/16)"))?;
        if net.trunc() != net {
            return Err(format!("{s:?} has host bits set (did you mean {}?)", net.trunc()));
        }
        Ok(Self(net))
    }
}
from_str_deserialize!(Cidr);

impl Cidr {
    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &ipnet::IpNet) -> bool {
        self.0.contains(&other.network()) || other.contains(&self.0.network())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Kubernetes version such as `v1.31.4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl FromStr for KubeVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a Kubernetes version (expected e.g. v1.31.4)");
        let n: Vec<u32> = s
            .strip_prefix('v')
            .unwrap_or(s)
            .split('.')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match n[..] {
            [1, minor, patch] => Ok(Self { major: 1, minor, patch }),
            _ => Err(bad()),
        }
    }
}
from_str_deserialize!(KubeVersion);

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A registry path such as `registry.k8s.io` or `mirror.corp:5000/k8s`:
/// a host (with an optional port) and path segments, no scheme, no tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRepository(pub String);

impl FromStr for ImageRepository {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not an image repository (expected e.g. registry.k8s.io or mirror.corp:5000/k8s)");
        let s = s.trim_end_matches('/');
        let (host, path) = s.split_once('/').unwrap_or((s, ""));
        let (name, port) = host.split_once(':').unwrap_or((host, "80"));
        let path_ok = path
            .split('/')
            .filter(|p| !p.is_empty())
            .all(|p| p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
        if s.contains("://") || !is_dns_name(name) || port.parse::<u16>().is_err() || !path_ok {
            return Err(bad());
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
}
from_str_deserialize!(ImageRepository);

impl fmt::Display for ImageRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!("10.0.0.1:6443".parse::<Endpoint>().unwrap().to_string(), "10.0.0.1:6443");
        assert_eq!("[fd00::1]:6443".parse::<Endpoint>().unwrap().to_string(), "[fd00::1]:6443");
        assert_eq!("API.maas:6443".parse::<Endpoint>().unwrap().host, "api.maas");
        for bad in ["10.0.0.1", "api.maas", "10.0.0.1:0", "10.0.0.1:70000", "fd00::1", ":6443"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_and_durations() {
        assert_eq!("v1.31.4".parse::<KubeVersion>().unwrap().minor, 31);
        assert!("1.31".parse::<KubeVersion>().is_err());
        assert_eq!("5m".parse::<Dur>().unwrap().0, Duration::from_secs(300));
        assert!("0s".parse::<Dur>().is_err());
    }

    #[test]
    fn a_token_lifetime_of_zero_never_expires() {
        for never in ["0s", "0", "0m"] {
            assert!(never.parse::<Ttl>().unwrap().never_expires(), "{never}");
        }
        let day = "24h".parse::<Ttl>().unwrap();
        assert_eq!(day, Ttl::default());
        assert_eq!(day.to_string(), "24h");
        assert_eq!("90m".parse::<Ttl>().unwrap().to_string(), "1h30m");
        assert_eq!("0s".parse::<Ttl>().unwrap().to_string(), "0s");
        assert!("soon".parse::<Ttl>().unwrap_err().contains("0s for never"));
    }

    #[test]
    fn image_repositories() {
        assert_eq!("mirror.corp:5000/k8s/".parse::<ImageRepository>().unwrap().0, "mirror.corp:5000/k8s");
        assert!("registry.k8s.io".parse::<ImageRepository>().is_ok());
        for bad in ["https://registry.k8s.io", "mirror corp", "mirror:port/x", "m/UPPER"] {
            assert!(bad.parse::<ImageRepository>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_with_host_bits_says_what_was_meant() {
        let e = "192.168.1.0/16".parse::<Cidr>().unwrap_err();
        assert!(e.contains("did you mean 192.168.0.0/16"), "{e}");
    }
}
