//! The node's facts, gathered once for `run` and `verify`: its FQDN, its
//! addresses (with interface and subnet), the DNS servers that answer for
//! it and the ones the rest of the system asks, the MAAS server, the boot.
//!
//! Facts come from MAAS where MAAS has them. The FQDN is cloud-init's
//! `ds.meta_data.local-hostname` (MAAS's FQDN; `v1.local_hostname` is only
//! the short name), the DNS servers behind systemd-resolved's stub are its
//! upstreams. Under `--root` the node has no addresses yet: they are not the
//! build host's.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, Result};

use crate::config::Config;
use crate::net::Address;
use crate::root::Root;

/// cloud-init's instance data, where the MAAS datasource's meta-data is.
pub const INSTANCE_DATA_PATH: &str = "/run/cloud-init/instance-data.json";

#[derive(Debug, Clone)]
pub struct Node {
    /// The FQDN, or why it is unknown.
    pub fqdn: Result<String, String>,
    /// Empty under `--root`: an image has no addresses of its own yet.
    pub addresses: Vec<Address>,
    /// The servers that answer for the MAAS zone: `dns.nameservers`, else
    /// the system's upstreams.
    pub maas_servers: Vec<SocketAddr>,
    /// `/etc/resolv.conf`'s servers: what the rest of the system asks.
    pub system_servers: Vec<SocketAddr>,
    /// The MAAS server's host, from cloud-init's MAAS datasource.
    pub maas_server: Option<String>,
    /// MAAS's system id (the datasource's `instance-id`) and the machine's
    /// availability zone where cloud-init knows it: the provider-id.
    pub system_id: Option<String>,
    pub zone: Option<String>,
    /// This boot's id (`unknown` in an unbooted image).
    pub boot_id: String,
}

impl Default for Node {
    /// A node nothing is known about.
    fn default() -> Self {
        Self {
            fqdn: Err("not gathered".into()),
            addresses: Vec::new(),
            maas_servers: Vec::new(),
            system_servers: Vec::new(),
            maas_server: None,
            system_id: None,
            zone: None,
            boot_id: "unknown".into(),
        }
    }
}

impl Node {
    /// The node `root` describes. Only the running system has addresses;
    /// an image (`--root`) has none.
    pub fn gather(root: &Root, config: &Config) -> Result<Self> {
        let addresses = if root.is_host() { crate::net::local_addresses()? } else { Vec::new() };
        let maas_servers = if config.dns.nameservers.is_empty() {
            crate::dns::upstream_nameservers(root)
        } else {
            config.dns.nameservers.iter().map(|n| n.0).collect()
        };
        let instance = instance_data(root)?;
        let named = |p: &str| instance.as_ref().and_then(|v| named(v, p));
        Ok(Self {
            system_id: named("/ds/meta_data/instance-id"),
            zone: named("/v1/availability_zone"),
            fqdn: fqdn(root, config).map_err(|e| format!("{e:#}")),
            addresses,
            maas_servers,
            system_servers: crate::dns::system_nameservers(root),
            maas_server: crate::maas::server_host(root)?,
            boot_id: crate::state::boot_id(root)?,
        })
    }

    /// The node's own IP addresses.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|a| a.net.addr()).collect()
    }

    /// The FQDN, when known.
    pub fn fqdn(&self) -> Option<&str> {
        self.fqdn.as_deref().ok()
    }
}

/// The node's FQDN: `hostname:` from the config, else MAAS's
/// `local-hostname` from cloud-init's instance data, else the system
/// hostname, with `dns.domain` appended when it has no dot.
pub fn fqdn(root: &Root, config: &Config) -> Result<String> {
    if let Some(h) = &config.hostname {
        return Ok(qualify(h.as_str(), config));
    }
    if let Some(h) = local_hostname(root)? {
        return Ok(qualify(&h, config));
    }
    let system = match root.read_string_opt("/proc/sys/kernel/hostname")? {
        Some(h) if !h.trim().is_empty() => h,
        _ => root.read_string_opt("/etc/hostname")?.unwrap_or_default(),
    };
    let system = system.trim();
    anyhow::ensure!(!system.is_empty(), "no hostname: set `hostname:` in the config, or the system hostname");
    Ok(qualify(system, config))
}

fn qualify(host: &str, config: &Config) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.contains('.') { host } else { format!("{host}.{}", config.dns.domain) }
}

/// `local-hostname` as MAAS hands it to cloud-init: the datasource's own
/// meta-data first (MAAS puts the FQDN there), then cloud-init's
/// standardized `v1.local_hostname`, which cloud-init shortens to the first
/// label.
fn local_hostname(root: &Root) -> Result<Option<String>> {
    let Some(v) = instance_data(root)? else { return Ok(None) };
    Ok(named(&v, "/ds/meta_data/local-hostname").or_else(|| named(&v, "/v1/local_hostname")))
}

/// cloud-init's instance data, when cloud-init has run.
fn instance_data(root: &Root) -> Result<Option<serde_json::Value>> {
    let Some(text) = root.read_string_opt(INSTANCE_DATA_PATH)? else { return Ok(None) };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("parsing {}", root.path(INSTANCE_DATA_PATH).display()))
}

/// A non-empty string at `pointer`.
fn named(v: &serde_json::Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(|h| h.as_str()).map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_order() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        root.write("/etc/hostname", b"node7\n", 0o644).unwrap();
        let mut cfg = Config::default();
        assert_eq!(fqdn(&root, &cfg).unwrap(), "node7.maas");
        root.write(INSTANCE_DATA_PATH, br#"{"v1":{"local_hostname":"node7.lab.maas"}}"#, 0o644).unwrap();
        assert_eq!(fqdn(&root, &cfg).unwrap(), "node7.lab.maas");
        cfg.hostname = Some("given.maas".parse().unwrap());
        assert_eq!(fqdn(&root, &cfg).unwrap(), "given.maas");
    }

    #[test]
    fn maas_fqdn_outside_the_maas_domain_comes_from_the_datasource_not_v1() {
        // What cloud-init's MAAS datasource leaves in instance-data.json for
        // a node in the MAAS domain dc1.example: v1 carries only the first
        // label (cloudinit/sources/__init__.py get_hostname), the
        // datasource's meta-data the FQDN MAAS served.
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        root.write("/etc/hostname", b"node1\n", 0o644).unwrap();
        let data = br#"{"v1":{"local_hostname":"node1"},"ds":{"meta_data":{"local-hostname":"node1.dc1.example","instance-id":"abc123"}}}"#;
        root.write(INSTANCE_DATA_PATH, data, 0o644).unwrap();
        assert_eq!(fqdn(&root, &Config::default()).unwrap(), "node1.dc1.example");
    }
}
