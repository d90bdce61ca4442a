//! The configuration document and its validation.
//!
//! One YAML document (see DESIGN.md §Configuration). Parsing goes YAML ->
//! JSON value -> the document's structs through `serde_path_to_error`, so
//! every rejection names the key's path. Then [`validate`] checks the rules
//! that span keys (overlapping CIDRs, what each role needs) and turns the
//! document into the types the program uses, where a role's material is
//! present by construction. Nothing is written before both have passed.

mod intake;
pub mod layers;
mod validate;
pub mod values;

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::options::DuplicateKeyPolicy;

pub use intake::{CONFIG_DIR, CONFIG_PATH, Loaded, USER_DATA_PATH, USERDATA_LAYER, config_files, load, merged};
pub(crate) use intake::{gunzip_if_compressed, user_data_layers, write_files_content};
use validate::validate;
use values::*;

/// A rejected configuration: exit code 2, nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration in {origin}: {key}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub message: String,
}

/// The configuration. As parsed (`Config<KubernetesDoc>`, every key as
/// written) and as the program uses it (`Config`, after [`validate`]: the
/// material each role needs is present by type).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config<K = Kubernetes> {
    pub hostname: Option<DnsName>,
    #[serde(default)]
    pub os: Os,
    pub proxy: Option<Proxy>,
    #[serde(default)]
    pub dns: Dns,
    pub kubernetes: Option<K>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub time: Time,
    #[serde(default)]
    pub run: Run,
}

impl<K> Default for Config<K> {
    fn default() -> Self {
        Self {
            hostname: None,
            os: Os::default(),
            proxy: None,
            dns: Dns::default(),
            kubernetes: None,
            resources: Resources::default(),
            time: Time::default(),
            run: Run::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootPolicy {
    Never,
    #[default]
    IfRequired,
    Always,
}

impl RebootPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::IfRequired => "if-required",
            Self::Always => "always",
        }
    }
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
    /// Which proxy apt uses.
    #[serde(default)]
    pub apt: AptProxy,
}

/// apt's proxy: MAAS often runs its own for apt, which curtin writes to
/// `/etc/apt/apt.conf.d/90curtin-aptproxy`; the corporate proxy's file
/// would sort after it and win.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AptProxy {
    /// MAAS's apt proxy when curtin set one, else the corporate proxy.
    #[default]
    Inherit,
    /// The corporate proxy, over MAAS's.
    Proxy,
    /// node-init writes nothing for apt.
    None,
}

impl AptProxy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inherit => "inherit",
            Self::Proxy => "proxy",
            Self::None => "none",
        }
    }
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

/// The role's name, as written in the config and on the command line.
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

/// The `kubernetes:` section as written: what each role needs is checked
/// by [`validate`], which turns it into a [`Kubernetes`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesDoc {
    pub role: Role,
    pub endpoint: Endpoint,
    pub version: Option<KubeVersion>,
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: Cidr,
    #[serde(default = "default_service_cidr")]
    pub service_cidr: Cidr,
    pub token: Option<Held<Token>>,
    #[serde(default)]
    pub ca_cert_hashes: Vec<CaHash>,
    pub certificate_key: Option<Held<CertKey>>,
    pub ca: Option<ClusterCaDoc>,
    pub vip: Option<Vip>,
    #[serde(default = "default_discovery_timeout")]
    pub discovery_timeout: Dur,
    #[serde(default)]
    pub token_ttl: Ttl,
    #[serde(default)]
    pub kubelet_extra_args: std::collections::BTreeMap<String, String>,
    pub image_repository: Option<ImageRepository>,
    #[serde(default)]
    pub ignore_preflight: Vec<String>,
    pub advertise_address: Option<std::net::IpAddr>,
    #[serde(default)]
    pub peers: Vec<Peer>,
}

/// The `kubernetes:` section as the program uses it.
#[derive(Debug, Clone)]
pub struct Kubernetes {
    pub endpoint: Endpoint,
    pub version: Option<KubeVersion>,
    pub pod_cidr: Cidr,
    pub service_cidr: Cidr,
    /// The VIP kube-vip holds; always there on init.
    pub vip: Option<Vip>,
    /// How long a join waits for the API server's cluster-info (the VIP
    /// comes up only once the init node has run `kubeadm init`).
    pub discovery_timeout: Dur,
    /// How long the init node's bootstrap token lives after `kubeadm
    /// init` (kubeadm's `ttl`; `0s`: never expires). Joins with that token
    /// must start within it; later ones need `node-init join-material`.
    pub token_ttl: Ttl,
    /// Extra kubelet flags (without `--`), e.g. `provider-id`, `node-labels`.
    pub kubelet_extra_args: std::collections::BTreeMap<String, String>,
    /// The registry every image kubeadm pulls comes from (kubeadm's
    /// `imageRepository`; containerd's sandbox image too), instead of
    /// `registry.k8s.io`: a mirror on a proxy-only or air-gapped network.
    pub image_repository: Option<ImageRepository>,
    /// Preflight checks `run` does not stop for before kubeadm, by name
    /// (see [`PREFLIGHT`]), as kubeadm's `--ignore-preflight-errors`.
    pub ignore_preflight: Vec<String>,
    /// The API server's address on a control-plane node; default: this
    /// node's address in the VIP's subnet (else kubeadm's choice, the
    /// default route's).
    pub advertise_address: Option<std::net::IpAddr>,
    /// The cluster's other nodes, for `verify`'s `peers` check. A list of
    /// every node may be shared by all of them: each leaves out its own
    /// address.
    pub peers: Vec<Peer>,
    /// The role, with what it needs.
    pub member: Member,
}

/// A role with the material it needs, present by construction. Every role
/// but [`Member::Joined`] has the bootstrap token: init creates it, a join
/// authenticates with it.
#[derive(Debug, Clone)]
pub enum Member {
    /// The first control-plane node: the pre-seeded CA, the key its
    /// certificates are uploaded under, and the VIP kube-vip announces.
    Init { token: Token, ca: ClusterCa, certificate_key: CertKey, vip: Vip },
    /// A control-plane join: the CA pins and the certificate key.
    ControlPlane { token: Token, ca_cert_hashes: Vec<CaHash>, certificate_key: CertKey },
    /// A worker join: the CA pins.
    Worker { token: Token, ca_cert_hashes: Vec<CaHash> },
    /// A node of `role` that joined (or initialised) the cluster, whose
    /// join material node-init scrubbed after: the stage decides by
    /// membership only and never runs kubeadm with it.
    Joined { role: Role, ca_cert_hashes: Vec<CaHash> },
}

impl Kubernetes {
    pub fn role(&self) -> Role {
        match self.member {
            Member::Init { .. } => Role::Init,
            Member::ControlPlane { .. } => Role::ControlPlane,
            Member::Worker { .. } => Role::Worker,
            Member::Joined { role, .. } => role,
        }
    }

    /// The bootstrap token, unless it was scrubbed after the join.
    pub fn token(&self) -> Option<&Token> {
        match &self.member {
            Member::Init { token, .. } | Member::ControlPlane { token, .. } | Member::Worker { token, .. } => {
                Some(token)
            }
            Member::Joined { .. } => None,
        }
    }

    /// The certificate key, on the roles that have one.
    pub fn certificate_key(&self) -> Option<&CertKey> {
        match &self.member {
            Member::Init { certificate_key, .. } | Member::ControlPlane { certificate_key, .. } => {
                Some(certificate_key)
            }
            Member::Worker { .. } | Member::Joined { .. } => None,
        }
    }

    /// The CA pins of a join; none on init.
    pub fn ca_cert_hashes(&self) -> &[CaHash] {
        match &self.member {
            Member::ControlPlane { ca_cert_hashes, .. }
            | Member::Worker { ca_cert_hashes, .. }
            | Member::Joined { ca_cert_hashes, .. } => ca_cert_hashes,
            Member::Init { .. } => &[],
        }
    }

    /// Whether the join material was scrubbed after this node joined.
    pub fn scrubbed(&self) -> bool {
        matches!(self.member, Member::Joined { .. })
    }
}

fn default_discovery_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}

#[derive(Debug, Clone)]
pub struct ClusterCa {
    pub cert: PemCerts,
    pub key: PemKey,
}

/// `kubernetes.ca` as written: the key may have been scrubbed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterCaDoc {
    pub cert: PemCerts,
    pub key: Held<PemKey>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Where kube-vip announces the VIP; default: this node's interface in
    /// the VIP's subnet.
    pub interface: Option<String>,
    /// The kube-vip image; a mirror's copy on an air-gapped network.
    #[serde(default = "default_kube_vip_image")]
    pub image: String,
}

impl Default for Vip {
    fn default() -> Self {
        Self { interface: None, image: default_kube_vip_image() }
    }
}

/// The `verify` checks `run` evaluates before kubeadm: what kubeadm's own
/// preflight or the cluster depends on. `kubernetes.ignore_preflight` may
/// name any of them.
pub const PREFLIGHT: &[&str] = &["swap", "ip_forward", "modules", "cidr_overlap", "vip", "time_sync", "etcd_disk"];

/// Where kubeadm pulls from unless `kubernetes.image_repository` says.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "registry.k8s.io";

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
    /// Free space under `/var/lib`, where containerd, kubelet and etcd
    /// write: what the cluster still needs, not the disk's size.
    #[serde(default = "default_disk")]
    pub disk_gib: u64,
    /// The p99 fdatasync latency etcd's WAL may see (`etcd_disk`).
    #[serde(default = "default_etcd_fsync_p99")]
    pub etcd_fsync_p99: Dur,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpus: default_cpus(),
            memory_mib: default_memory(),
            disk_gib: default_disk(),
            etcd_fsync_p99: default_etcd_fsync_p99(),
        }
    }
}

fn default_cpus() -> u32 {
    4
}
fn default_memory() -> u64 {
    8192
}
/// A 60 GB node (the gateway's sizing) has about 40-48 GiB free after the
/// OS, curtin's swap file and ext4's reserve, so asking for 60 free would
/// fail every one. 20 GiB holds etcd at its largest recommended quota
/// (8 GiB), the control plane's and the gateway's images, and kubelet's
/// image-GC and eviction margins (85 % used, 15 % free) on such a disk.
fn default_disk() -> u64 {
    20
}
/// etcd's own guidance: the 99th percentile of WAL fdatasync under 10 ms.
fn default_etcd_fsync_p99() -> Dur {
    Dur(Duration::from_millis(10))
}

/// `run:`: how the first-boot pipeline runs.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Work that needs no package lock (the image pre-pull, the DNS wait,
    /// a join's token discovery) runs beside the patch; `false` runs every
    /// step strictly one after another.
    #[serde(default = "yes")]
    pub parallel: bool,
}

impl Default for Run {
    fn default() -> Self {
        Self { parallel: true }
    }
}

fn yes() -> bool {
    true
}

/// `time:`: how far this node's clock may be from the MAAS server's
/// (`verify`'s `time_sync`; certificates and MAAS's OAuth both depend on it).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Time {
    #[serde(default = "default_max_skew")]
    pub max_skew: Dur,
}

impl Default for Time {
    fn default() -> Self {
        Self { max_skew: default_max_skew() }
    }
}

fn default_max_skew() -> Dur {
    Dur(Duration::from_secs(2))
}

impl DnsName {
    fn from_str_unchecked(s: &str) -> Self {
        s.parse().expect("a valid built-in DNS name")
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
/// The YAML file at `path`, read and parsed as a value; its origin (the
/// path as given) is returned with it for the errors that follow.
pub fn read_yaml_file(path: &std::path::Path) -> Result<(String, serde_json::Value), ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        key: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    let value = parse_yaml_value(&text, &origin)?;
    Ok((origin, value))
}

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
    let doc: Config<KubernetesDoc> = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            origin: origin.to_owned(),
            key: if path == "." { "(top level)".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })?;
    validate(doc).map_err(|(key, message)| ConfigError { origin: origin.to_owned(), key, message })
}

#[cfg(test)]
mod tests;
