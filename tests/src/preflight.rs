//! `node-init verify` run as a node runs it, inside a namespace the test
//! made (the node at 10.201.N.2, the host side at 10.201.N.1) whose
//! resolv.conf names a DNS stand-in on the host side, so no question
//! leaves the test's network; and the report it prints, read check by
//! check.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Output;

use crate::dns::TestDns;
use crate::net::Netns;
use crate::text;

/// The node's name in the zone `knowing_the_node` serves.
pub const FQDN: &str = "node1.maas";

/// A namespace and its DNS stand-in; both go when dropped.
pub struct Preflight {
    pub ns: Netns,
    pub dns: TestDns,
    /// Where the config files go.
    pub dir: tempfile::TempDir,
}

impl Preflight {
    /// A DNS stand-in that knows no name.
    pub fn new() -> Self {
        let ns = Netns::new();
        let dns = TestDns::start_on(SocketAddr::new(IpAddr::V4(ns.host_ip), 53));
        std::fs::write(ns.etc().join("resolv.conf"), format!("nameserver {}\n", ns.host_ip)).unwrap();
        Self { ns, dns, dir: tempfile::tempdir().unwrap() }
    }

    /// A MAAS zone that knows the node: its A and PTR records and the
    /// zone's SOA.
    pub fn knowing_the_node() -> Self {
        let p = Self::new();
        p.dns.address(FQDN, IpAddr::V4(p.ns.node_ip));
        p.dns.ptr(IpAddr::V4(p.ns.node_ip), FQDN);
        p.dns.soa("maas");
        p
    }

    /// An address on the node's subnet.
    pub fn vip(&self, last: u8) -> Ipv4Addr {
        let o = self.ns.node_ip.octets();
        Ipv4Addr::new(o[0], o[1], o[2], last)
    }

    /// `node-init verify --config C --output json ARGS` in the namespace,
    /// with exactly `config` in C.
    pub fn output(&self, config: &str, args: &[&str]) -> Output {
        self.output_after("true", config, args)
    }

    /// The same after the shell command `setup`, in a mount and UTS
    /// namespace of that run's own (see [`Netns::node_init_after`]).
    pub fn output_after(&self, setup: &str, config: &str, args: &[&str]) -> Output {
        let cfg = self.dir.path().join("c.yaml");
        std::fs::write(&cfg, config).unwrap();
        let mut all = vec!["verify", "--config", cfg.to_str().unwrap(), "--output", "json"];
        all.extend_from_slice(args);
        self.ns.node_init_after(setup, &all)
    }

    /// The same, read: the exit code and the report.
    pub fn verify(&self, config: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        self.verify_after("true", config, args)
    }

    /// Read, after `setup`.
    pub fn verify_after(&self, setup: &str, config: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        let out = self.output_after(setup, config, args);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
        (out.status.code(), v)
    }

    /// The node's own resolv.conf.
    pub fn resolv_conf(&self, content: &str) {
        std::fs::write(self.ns.etc().join("resolv.conf"), content).unwrap();
    }

    /// Makes the node MAAS-deployed as curtin does: a datasource config
    /// whose `metadata_url` is `url`, in the node's own /etc/cloud.
    pub fn maas_datasource(&self, url: &str) {
        // `ip netns exec` binds /etc/netns/NAME/cloud over /etc/cloud, which
        // must exist for it; an empty directory changes nothing else.
        std::fs::create_dir_all("/etc/cloud").unwrap();
        let dir = self.ns.etc().join("cloud/cloud.cfg.d");
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = format!(
            "#cloud-config\ndatasource:\n  MAAS:\n    consumer_key: ck\n    metadata_url: {url}\n    \
             token_key: tk\n    token_secret: ts\n"
        );
        std::fs::write(dir.join("90_maas_cloud_config.cfg"), cfg).unwrap();
    }

    /// `verify --timeout TIMEOUT` as the node: its FQDN and the stand-in
    /// as nameserver, then `config`.
    pub fn verify_node(&self, config: &str, timeout: &str) -> (Option<i32>, serde_json::Value) {
        let base = format!("hostname: {FQDN}\ndns:\n  nameservers: [\"{}\"]\n", self.ns.host_ip);
        self.verify(&format!("{base}{config}"), &["--timeout", timeout])
    }
}

impl Default for Preflight {
    fn default() -> Self {
        Self::new()
    }
}

/// The check called `name` in a report.
pub fn check<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// That check's status and reason.
pub fn outcome<'a>(v: &'a serde_json::Value, name: &str) -> (&'a str, &'a str) {
    let c = check(v, name);
    (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap())
}
