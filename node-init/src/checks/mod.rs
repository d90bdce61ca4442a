//! Preflight checks for `node-init verify`: one module per check behind the
//! [`Check`] trait, listed in [`TABLE`]. Checks only read. They all run
//! concurrently under one deadline; a check still running at the deadline
//! fails as a timeout while the others are still reported.
//!
//! To add a check: a unit struct implementing `Check` in its own file, and
//! a line in `TABLE`.

mod cidr;
mod dns;
mod egress;
mod kernel;
mod resources;
mod vip;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use crate::config::Config;
use crate::net::Address;
use crate::root::Root;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// What a check found: a status and a one-line reason.
pub type Finding = (Status, String);

/// What checks read: the root (for `/proc`, `/sys`), the config, and the
/// node's facts, gathered once.
pub struct Facts<'a> {
    pub root: &'a Root,
    pub config: &'a Config,
    pub addresses: Vec<Address>,
    pub fqdn: Option<String>,
    /// The MAAS DNS servers (`dns.nameservers`, else resolv.conf's).
    pub maas_servers: Vec<SocketAddr>,
    /// resolv.conf's servers: what the rest of the system asks.
    pub system_servers: Vec<SocketAddr>,
    /// One network question's deadline: a little less than the run's, so a
    /// dead server is reported as such rather than as a cut-off check.
    pub query_timeout: Duration,
}

impl<'a> Facts<'a> {
    /// The facts of the node `root` describes, for checks that must end
    /// within `deadline`.
    pub fn gather(root: &'a Root, config: &'a Config, deadline: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            root,
            config,
            addresses: crate::net::local_addresses()?,
            fqdn: crate::config::fqdn(root, config).ok(),
            maas_servers: crate::dns::maas_nameservers(root, config),
            system_servers: crate::dns::system_nameservers(root),
            query_timeout: deadline.mul_f64(0.9),
        })
    }
}

#[async_trait]
pub trait Check: Send + Sync {
    fn name(&self) -> &'static str;
    async fn run(&self, facts: &Facts<'_>) -> Finding;
}

pub const TABLE: &[&dyn Check] = &[
    &resources::Cpus,
    &resources::Memory,
    &resources::Disk,
    &kernel::Swap,
    &kernel::IpForward,
    &kernel::Modules,
    &cidr::Overlap,
    &dns::Forward,
    &dns::Reverse,
    &dns::Zone,
    &dns::Delegation,
    &dns::Require,
    &egress::Proxy,
    &egress::Egress,
    &vip::Vip,
];

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: &'static str,
    pub status: Status,
    pub reason: String,
    pub duration_ms: u64,
}

/// Runs every check concurrently; each gets what is left of `deadline`.
pub async fn run_all(facts: &Facts<'_>, deadline: Duration) -> Vec<Report> {
    let end = tokio::time::Instant::now() + deadline;
    let runs = TABLE.iter().map(|c| async move {
        let started = Instant::now();
        let (status, reason) = match tokio::time::timeout_at(end, c.run(facts)).await {
            Ok(found) => found,
            Err(_) => (Status::Fail, format!("timed out after {}", humantime::format_duration(deadline))),
        };
        Report { name: c.name(), status, reason, duration_ms: started.elapsed().as_millis() as u64 }
    });
    futures_util::future::join_all(runs).await
}

/// The successes when every result is one, else the failures joined.
pub fn every(results: Vec<Result<String, String>>) -> Result<Vec<String>, String> {
    let failed: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().cloned()).collect();
    if failed.is_empty() { Ok(results.into_iter().filter_map(Result::ok).collect()) } else { Err(failed.join("; ")) }
}

pub fn pass(reason: impl Into<String>) -> Finding {
    (Status::Pass, reason.into())
}

pub fn fail(reason: impl Into<String>) -> Finding {
    (Status::Fail, reason.into())
}
