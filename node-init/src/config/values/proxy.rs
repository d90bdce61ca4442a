//! The proxy's values: its URL (which may carry a password, so it shows
//! redacted) and the `no_proxy` entries.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, de};

use super::is_dns_name;
use crate::secret::Secret;

/// A proxy URL `http://[user:pass@]host:port`. Display hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(url::Url);

impl ProxyUrl {
    /// The URL with its password, for the files that must hold it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    pub fn has_password(&self) -> bool {
        self.0.password().is_some()
    }

    /// The port, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }

    /// `user:password` for a `Proxy-Authorization: Basic` header, decoded
    /// from the URL's percent-encoding; `None` without a user.
    pub fn credentials(&self) -> Option<Secret<String>> {
        if self.0.username().is_empty() {
            return None;
        }
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let user = decode(self.0.username());
        let pass = self.0.password().map(decode).unwrap_or_default();
        Some(Secret::new(format!("{user}:{pass}")))
    }
}

impl FromStr for ProxyUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // The input may hold a password, so it is never quoted back.
        let bad =
            |why: &str| format!("is not a proxy URL: {why} (value redacted; expected http://[user:pass@]host:port)");
        let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
            return Err(bad("a proxy URL has no path, query or fragment"));
        }
        Ok(Self(u))
    }
}
secret_from_str_deserialize!(ProxyUrl);

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Setting a password on a URL that already has one cannot fail.
            let _ = shown.set_password(Some("redacted"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// A `no_proxy` entry as an operator writes it: a host, a domain suffix
/// (`.corp`), an IP or a CIDR. Commas and spaces are refused: they would
/// split the entry when NO_PROXY is joined.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NoProxyEntry(pub String);

impl FromStr for NoProxyEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let host = t.strip_prefix("*.").or_else(|| t.strip_prefix('.')).unwrap_or(t);
        let valid =
            t == "*" || is_dns_name(host) || host.parse::<IpAddr>().is_ok() || host.parse::<ipnet::IpNet>().is_ok();
        if !valid {
            return Err(format!("{s:?} is not a no_proxy entry (expected a host, .domain, IP or CIDR)"));
        }
        Ok(Self(t.to_owned()))
    }
}
from_str_deserialize!(NoProxyEntry);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_url_display_hides_the_password() {
        let u: ProxyUrl = "http://user:s3cret@10.0.0.1:3128".parse().unwrap();
        assert_eq!(u.to_string(), "http://user:redacted@10.0.0.1:3128/");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!(u.expose().contains("s3cret"));
        let err = "ftp://user:s3cret@h".parse::<ProxyUrl>().unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
