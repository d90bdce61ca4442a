//! Preflight checks for `node-init verify`: one module per check behind the
//! [`Check`] trait, listed in [`TABLE`]. Checks only read. They all run
//! concurrently under one deadline; a check still running at the deadline
//! fails as a timeout while the others are still reported. A check that
//! cannot look (an unreadable `/proc` file, no FQDN to ask for) returns an
//! error, reported as status `error`, never as a verdict.
//!
//! To add a check: a unit struct implementing `Check` in its own file, and
//! a line in `TABLE`.

mod cidr;
mod clock;
mod dns;
mod duplicate_ip;
mod egress;
mod etcd_disk;
mod hostname;
mod http;
mod kernel;
mod maas;
mod peers;
mod registry;
mod resources;
mod runtime;
mod vip;
mod wildcard;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use crate::config::Config;
use crate::node::Node;
use crate::root::Root;
use crate::runner::Runner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// The input is not configured.
    Skip,
    /// The check could not look, and says why: never a verdict on the node.
    Error,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Pass, Status::Fail, Status::Skip, Status::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::Error => "error",
        }
    }
}

/// What a check found: a verdict and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub status: Status,
    pub reason: String,
}

/// What checks read: the root (for `/proc`, `/sys`), the config, the
/// node's facts, gathered once, and the runner for the read-only commands
/// a check asks (`kubeadm version`).
pub struct Inputs<'a> {
    pub root: &'a Root,
    pub config: &'a Config,
    pub node: &'a Node,
    pub runner: &'a dyn Runner,
    /// One network question's deadline: a little less than the run's, so a
    /// dead server is reported as such rather than as a cut-off check.
    pub query_timeout: Duration,
}

impl<'a> Inputs<'a> {
    /// The inputs of checks that must end within `deadline`.
    pub fn new(root: &'a Root, config: &'a Config, node: &'a Node, runner: &'a dyn Runner, deadline: Duration) -> Self {
        Self { root, config, node, runner, query_timeout: deadline.mul_f64(0.9) }
    }
}

#[async_trait]
pub trait Check: Send + Sync {
    fn name(&self) -> &'static str;
    /// The finding, or why the check could not run (status `error`).
    async fn run(&self, i: &Inputs<'_>) -> anyhow::Result<Finding>;
}

pub const TABLE: &[&dyn Check] = &[
    &resources::Cpus,
    &resources::Memory,
    &resources::Disk,
    &etcd_disk::EtcdDisk,
    &clock::TimeSync,
    &hostname::Hostname,
    &kernel::Swap,
    &kernel::IpForward,
    &kernel::Modules,
    &cidr::Overlap,
    &dns::Forward,
    &dns::Reverse,
    &dns::Zone,
    &dns::Delegation,
    &dns::Require,
    &wildcard::Wildcard,
    &egress::Proxy,
    &egress::Egress,
    &registry::Registry,
    &vip::Vip,
    &duplicate_ip::DuplicateIp,
    &peers::Peers,
    &maas::Metadata,
    &runtime::Runtime,
];

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: &'static str,
    pub status: Status,
    pub reason: String,
    pub duration_ms: u64,
}

/// Runs every check concurrently; each gets what is left of `deadline`.
pub async fn run_all(i: &Inputs<'_>, deadline: Duration) -> Vec<Report> {
    run_these(TABLE, i, deadline).await
}

/// Runs the named checks concurrently, in table order; a name that is no
/// check is left out.
pub async fn run_named(names: &[&str], i: &Inputs<'_>, deadline: Duration) -> Vec<Report> {
    let chosen: Vec<&dyn Check> = TABLE.iter().copied().filter(|c| names.contains(&c.name())).collect();
    run_these(&chosen, i, deadline).await
}

async fn run_these(checks: &[&dyn Check], i: &Inputs<'_>, deadline: Duration) -> Vec<Report> {
    let end = tokio::time::Instant::now() + deadline;
    let runs = checks.iter().map(|c| async move {
        let started = Instant::now();
        let found = match tokio::time::timeout_at(end, c.run(i)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => Finding { status: Status::Error, reason: format!("could not run: {e:#}") },
            Err(_) => fail(format!("timed out after {}", humantime::format_duration(deadline))),
        };
        Report {
            name: c.name(),
            status: found.status,
            reason: found.reason,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    });
    futures_util::future::join_all(runs).await
}

/// The successes when every result is one, else the failures joined.
pub fn every(results: Vec<Result<String, String>>) -> Result<Vec<String>, String> {
    let failed: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().cloned()).collect();
    if failed.is_empty() { Ok(results.into_iter().filter_map(Result::ok).collect()) } else { Err(failed.join("; ")) }
}

pub fn pass(reason: impl Into<String>) -> Finding {
    Finding { status: Status::Pass, reason: reason.into() }
}

pub fn fail(reason: impl Into<String>) -> Finding {
    Finding { status: Status::Fail, reason: reason.into() }
}

pub fn skip(reason: impl Into<String>) -> Finding {
    Finding { status: Status::Skip, reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::World;

    fn statuses(w: &World, config: &Config) -> Vec<(String, Status, String)> {
        let node = w.node.clone();
        let inputs = Inputs::new(&w.root, config, &node, &w.runner, Duration::from_secs(2));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_all(&inputs, Duration::from_secs(2)))
            .into_iter()
            .map(|r| (r.name.to_owned(), r.status, r.reason))
            .collect()
    }

    fn find<'a>(all: &'a [(String, Status, String)], name: &str) -> &'a (String, Status, String) {
        all.iter().find(|r| r.0 == name).unwrap_or_else(|| panic!("no check {name}"))
    }

    #[test]
    fn a_check_that_cannot_read_its_proc_file_says_error_not_fail() {
        // A root with no /proc and /sys at all: nothing to look at.
        let mut w = World::new();
        w.node.fqdn = Err("no hostname".into());
        let all = statuses(&w, &Config::default());
        for name in ["cpus", "memory", "swap", "ip_forward", "modules", "cidr_overlap", "dns_forward", "dns_reverse"] {
            let (_, status, reason) = find(&all, name);
            assert_eq!(*status, Status::Error, "{name}: {reason}");
            assert!(reason.starts_with("could not run: "), "{name}: {reason}");
        }
        assert!(find(&all, "swap").2.contains("/proc/swaps does not exist"), "{:?}", find(&all, "swap"));
        assert!(find(&all, "dns_forward").2.contains("FQDN is unknown"), "{:?}", find(&all, "dns_forward"));
    }

    #[test]
    fn every_preflight_name_is_a_check() {
        for name in crate::config::PREFLIGHT {
            assert!(TABLE.iter().any(|c| c.name() == *name), "{name} is in config::PREFLIGHT but no check");
        }
    }

    #[test]
    fn readable_proc_files_give_verdicts() {
        let w = World::new();
        w.write("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 4194300 0 -2\n");
        w.write("/proc/sys/net/ipv4/ip_forward", "0\n");
        w.write("/proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
        let all = statuses(&w, &Config::default());
        assert_eq!(find(&all, "swap").1, Status::Fail, "{:?}", find(&all, "swap"));
        assert!(find(&all, "swap").2.contains("/swap.img"));
        assert_eq!(find(&all, "ip_forward").1, Status::Fail);
        assert_eq!(find(&all, "cpus").1, Status::Fail, "2 CPUs, minimum 4");
    }
}
