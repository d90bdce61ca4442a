//! The configuration document and its validation.
//!
//! One YAML document (see DESIGN.md §Configuration). Parsing goes YAML ->
//! JSON value -> typed structs through `serde_path_to_error`, so every
//! rejection names the key's path. Cross-key rules (overlapping CIDRs, what
//! each role needs) are checked right after, in [`Config::validate`].
//! Nothing is written before both have passed.

mod intake;
pub mod values;

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::options::DuplicateKeyPolicy;

pub use intake::{CONFIG_PATH, Loaded, Origin, USER_DATA_PATH, fqdn, load};
use values::*;

/// A rejected configuration: exit code 2, nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration in {origin}: {key}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub hostname: Option<DnsName>,
    #[serde(default)]
    pub os: Os,
    pub proxy: Option<Proxy>,
    #[serde(default)]
    pub dns: Dns,
    pub kubernetes: Option<Kubernetes>,
    #[serde(default)]
    pub resources: Resources,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootPolicy {
    Never,
    #[default]
    IfRequired,
    Always,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Os {
    #[serde(default)]
    pub patch: bool,
    #[serde(default)]
    pub reboot: RebootPolicy,
    /// How long `patch` waits for the package manager's lock held by
    /// another process (unattended-upgrades, packagekit).
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Dur,
}

impl Default for Os {
    fn default() -> Self {
        Self { patch: false, reboot: RebootPolicy::default(), lock_timeout: default_lock_timeout() }
    }
}

fn default_lock_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    pub http: Option<ProxyUrl>,
    pub https: Option<ProxyUrl>,
    #[serde(default)]
    pub no_proxy: Vec<NoProxyEntry>,
    pub ca_cert: Option<PemCerts>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default = "default_domain")]
    pub domain: DnsName,
    #[serde(default)]
    pub nameservers: Vec<NameServer>,
    #[serde(default)]
    pub require: Vec<DnsName>,
    #[serde(default = "default_dns_timeout")]
    pub timeout: Dur,
}

impl Default for Dns {
    fn default() -> Self {
        Self { domain: default_domain(), nameservers: Vec::new(), require: Vec::new(), timeout: default_dns_timeout() }
    }
}

fn default_domain() -> DnsName {
    DnsName::from_str_unchecked("maas")
}

fn default_dns_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Init,
    ControlPlane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::ControlPlane => "control-plane",
            Self::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    pub role: Role,
    pub endpoint: Endpoint,
    pub version: Option<KubeVersion>,
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: Cidr,
    #[serde(default = "default_service_cidr")]
    pub service_cidr: Cidr,
    pub token: Option<Token>,
    #[serde(default)]
    pub ca_cert_hashes: Vec<CaHash>,
    pub certificate_key: Option<CertKey>,
    pub ca: Option<ClusterCa>,
    pub vip: Option<Vip>,
    /// How long a join waits for the API server's cluster-info (the VIP
    /// comes up only once the init node has run `kubeadm init`).
    #[serde(default = "default_discovery_timeout")]
    pub discovery_timeout: Dur,
    /// Extra kubelet flags (without `--`), e.g. `provider-id`, `node-labels`.
    #[serde(default)]
    pub kubelet_extra_args: std::collections::BTreeMap<String, String>,
}

fn default_discovery_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterCa {
    pub cert: PemCerts,
    pub key: PemKey,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    pub interface: String,
    /// The kube-vip image; a mirror's copy on an air-gapped network.
    #[serde(default = "default_kube_vip_image")]
    pub image: String,
}

pub const KUBE_VIP_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.8.10";

fn default_kube_vip_image() -> String {
    KUBE_VIP_IMAGE.to_owned()
}

pub fn default_pod_cidr() -> Cidr {
    Cidr("192.168.0.0/16".parse().expect("a valid CIDR"))
}

pub fn default_service_cidr() -> Cidr {
    Cidr("10.96.0.0/12".parse().expect("a valid CIDR"))
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    #[serde(default = "default_disk")]
    pub disk_gib: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Self { cpus: default_cpus(), memory_mib: default_memory(), disk_gib: default_disk() }
    }
}

fn default_cpus() -> u32 {
    4
}
fn default_memory() -> u64 {
    8192
}
fn default_disk() -> u64 {
    60
}

impl DnsName {
    fn from_str_unchecked(s: &str) -> Self {
        s.parse().expect("a valid built-in DNS name")
    }
}

impl Config {
    /// The pod and service CIDRs in force: configured, else kubeadm-style
    /// defaults, which `verify` checks even on a node with no config.
    pub fn cidrs(&self) -> (Cidr, Cidr) {
        self.kubernetes.as_ref().map_or((default_pod_cidr(), default_service_cidr()), |k| (k.pod_cidr, k.service_cidr))
    }

    /// Rules that span several keys. Returns the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_owned(), m));
        if let Some(p) = &self.proxy
            && p.http.is_none()
            && p.https.is_none()
            && p.ca_cert.is_none()
        {
            return err("proxy", "set at least one of http, https, ca_cert (or remove the proxy key)".into());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if let Some(ca) = self.proxy.as_ref().and_then(|p| p.ca_cert.as_ref()) {
            for (i, der) in ca.der.iter().enumerate() {
                if let Err(e) = crate::pki::check_ca(der, now) {
                    return err("proxy.ca_cert", format!("certificate {}: {e:#}", i + 1));
                }
            }
        }
        let Some(k) = &self.kubernetes else { return Ok(()) };
        let (pod, svc) = (k.pod_cidr, k.service_cidr);
        if pod.overlaps(&svc.0) {
            return err("kubernetes.service_cidr", format!("{svc} overlaps kubernetes.pod_cidr {pod}"));
        }
        if k.token.is_none() {
            return err("kubernetes.token", "required for every role".into());
        }
        match k.role {
            Role::Worker | Role::ControlPlane if k.ca_cert_hashes.is_empty() => {
                return err("kubernetes.ca_cert_hashes", "a join needs at least one sha256: CA pin".into());
            }
            Role::ControlPlane | Role::Init if k.certificate_key.is_none() => {
                return err("kubernetes.certificate_key", "required for init and control-plane".into());
            }
            Role::Init if k.ca.is_none() => {
                return err("kubernetes.ca", "init needs the pre-seeded cluster CA (cert and key)".into());
            }
            Role::Init if k.vip.is_none() => {
                return err("kubernetes.vip", "init needs vip.interface for kube-vip".into());
            }
            _ => {}
        }
        if k.vip.as_ref().is_some_and(|v| v.interface.is_empty() || v.interface.len() > 15 || v.interface.contains('/'))
        {
            return err("kubernetes.vip.interface", "expected a network interface name such as eth0".into());
        }
        if k.vip.is_some() && k.endpoint.ip().is_none() {
            return err(
                "kubernetes.endpoint",
                format!(
                    "{} names a host; kube-vip holds an address, so with vip set the endpoint is VIP:port",
                    k.endpoint
                ),
            );
        }
        if k.vip.as_ref().is_some_and(|v| v.image.is_empty() || v.image.chars().any(char::is_whitespace)) {
            return err(
                "kubernetes.vip.image",
                "expected an image reference such as ghcr.io/kube-vip/kube-vip:v0.8.10".into(),
            );
        }
        for (flag, value) in &k.kubelet_extra_args {
            let ok = !flag.is_empty()
                && !flag.starts_with('-')
                && flag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return err(
                    &format!("kubernetes.kubelet_extra_args.{flag}"),
                    "expected a kubelet flag name without dashes in front, e.g. node-labels".into(),
                );
            }
            if value.contains('\n') {
                return err(&format!("kubernetes.kubelet_extra_args.{flag}"), "a flag value is one line".into());
            }
        }
        if let (Role::Init, Some(ca)) = (k.role, &k.ca) {
            match crate::pki::key_matches_certificate(&ca.cert.der[0], ca.key.0.expose().as_bytes()) {
                Ok(true) => {}
                Ok(false) => {
                    return err("kubernetes.ca.key", "does not belong to kubernetes.ca.cert (value redacted)".into());
                }
                Err(e) => return err("kubernetes.ca.key", format!("{e:#} (value redacted)")),
            }
            if let Err(e) = crate::pki::check_ca(&ca.cert.der[0], now) {
                return err("kubernetes.ca.cert", format!("{e:#}"));
            }
        }
        Ok(())
    }
}

/// Parses and validates one YAML document. `origin` names where it came from
/// in every error.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let value = parse_yaml_value(text, origin)?;
    from_value(value, origin)
}

/// YAML to a generic value, refusing duplicate keys and alias bombs. Errors
/// carry a position but never a snippet of the text, which may hold secrets.
pub fn parse_yaml_value(text: &str, origin: &str) -> Result<serde_json::Value, ConfigError> {
    let options = serde_saphyr::options! { duplicate_keys: DuplicateKeyPolicy::Error };
    serde_saphyr::from_str_with_options::<serde_json::Value>(text, options).map_err(|e| ConfigError {
        origin: origin.to_owned(),
        key: "(document)".into(),
        message: format!(
            "not valid YAML: {}",
            e.without_snippet().render_with_formatter(&serde_saphyr::UserMessageFormatter)
        ),
    })
}

/// A generic value (the whole document, or the `node_init:` key of user
/// data) to a validated `Config`.
pub fn from_value(value: serde_json::Value, origin: &str) -> Result<Config, ConfigError> {
    let value = if value.is_null() { serde_json::Value::Object(Default::default()) } else { value };
    let cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            origin: origin.to_owned(),
            key: if path == "." { "(top level)".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })?;
    cfg.validate().map_err(|(key, message)| ConfigError { origin: origin.to_owned(), key, message })?;
    Ok(cfg)
}

#[cfg(test)]
mod tests;
