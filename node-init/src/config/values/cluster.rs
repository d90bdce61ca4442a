//! The cluster's credentials and certificates: the bootstrap token, the CA
//! pins, the certificate key, PEM certificates and keys. None of the secret
//! ones ever quotes what it was given.

use std::str::FromStr;

use serde::{Deserialize, Deserializer, de};

use crate::pki;
use crate::secret::Secret;

/// What a scrubbed secret reads in node-init's config files after the node
/// joined: the join material is gone, and the key says so.
pub const SCRUBBED: &str = "scrubbed";

/// A secret key of the join material as written: the value, or
/// [`SCRUBBED`] once node-init removed it from a node that joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held<T> {
    Present(T),
    Scrubbed,
}

impl<T> Held<T> {
    pub fn present(self) -> Option<T> {
        match self {
            Self::Present(v) => Some(v),
            Self::Scrubbed => None,
        }
    }

    pub fn is_scrubbed(&self) -> bool {
        matches!(self, Self::Scrubbed)
    }
}

impl<'de, T: FromStr<Err = String>> Deserialize<'de> for Held<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = crate::secret::deserialize_secret_string(d)?;
        if s.expose() == SCRUBBED {
            return Ok(Self::Scrubbed);
        }
        s.expose().parse().map(Self::Present).map_err(de::Error::custom)
    }
}

/// A kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`. The id is public
/// (it names the JWS in cluster-info); the secret is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub secret: Secret<String>,
}

impl Token {
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret.expose())
    }
}

impl FromStr for Token {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        match s.split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => {
                Ok(Self { id: id.into(), secret: Secret::new(secret.into()) })
            }
            _ => Err("is not a bootstrap token (value redacted; expected [a-z0-9]{6}.[a-z0-9]{16})".into()),
        }
    }
}
secret_from_str_deserialize!(Token);

/// A CA pin: `sha256:` and 64 hex digits, kept lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaHash(pub String);

impl FromStr for CaHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("sha256:") {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Self(format!("sha256:{}", h.to_ascii_lowercase())))
            }
            _ => Err(format!("{s:?} is not a CA hash (expected sha256: and 64 hex digits, see `node-init cert-hash`)")),
        }
    }
}
from_str_deserialize!(CaHash);

/// kubeadm's certificate key: 32 bytes as 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey(pub Secret<String>);

impl FromStr for CertKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(Secret::new(s.to_ascii_lowercase())))
        } else {
            Err("is not a certificate key (value redacted; expected 64 hex digits)".into())
        }
    }
}
secret_from_str_deserialize!(CertKey);

/// One or more PEM certificates, each checked to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemCerts {
    pub pem: String,
    pub der: Vec<Vec<u8>>,
}

impl FromStr for PemCerts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let der = pki::pem_certificates(s.as_bytes()).map_err(|e| format!("{e:#}"))?;
        Ok(Self { pem: s.to_owned(), der })
    }
}
from_str_deserialize!(PemCerts);

/// A PEM private key, checked to be one without keeping any of it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemKey(pub Secret<String>);

impl FromStr for PemKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        pki::check_private_key_pem(s.as_bytes()).map_err(|e| format!("{e:#} (value redacted)"))?;
        Ok(Self(Secret::new(s.to_owned())))
    }
}
secret_from_str_deserialize!(PemKey);
