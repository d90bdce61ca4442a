//! What kubeadm's own preflight insists on: swap off, IPv4 forwarding on,
//! and the `overlay` and `br_netfilter` modules loaded.

use anyhow::{Context as _, Result};
use async_trait::async_trait;

use super::{Check, Finding, Inputs, fail, pass};

pub struct Swap;
pub struct IpForward;
pub struct Modules;

#[async_trait]
impl Check for Swap {
    fn name(&self) -> &'static str {
        "swap"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let t = read(i, "/proc/swaps")?;
        let on: Vec<&str> = t.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
        Ok(if on.is_empty() {
            pass("swap is off")
        } else {
            fail(format!("swap is on ({}): kubelet refuses to start", on.join(", ")))
        })
    }
}

#[async_trait]
impl Check for IpForward {
    fn name(&self) -> &'static str {
        "ip_forward"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let v = read(i, "/proc/sys/net/ipv4/ip_forward")?;
        Ok(if v.trim() == "1" {
            pass("net.ipv4.ip_forward = 1")
        } else {
            fail(format!("net.ipv4.ip_forward = {} (kubeadm needs 1)", v.trim()))
        })
    }
}

#[async_trait]
impl Check for Modules {
    fn name(&self) -> &'static str {
        "modules"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        // Loaded as a module or built in: both show under /sys/module, which
        // a kernel always has; without it there is nothing to look at.
        anyhow::ensure!(i.root.exists("/sys/module"), "{} does not exist", i.root.path("/sys/module").display());
        let missing: Vec<&str> =
            ["overlay", "br_netfilter"].into_iter().filter(|m| !i.root.exists(format!("/sys/module/{m}"))).collect();
        Ok(if missing.is_empty() {
            pass("overlay, br_netfilter loaded")
        } else {
            fail(format!("not loaded: {}", missing.join(", ")))
        })
    }
}

/// A kernel file the check needs; its absence is "could not run".
pub(super) fn read(i: &Inputs<'_>, path: &str) -> Result<String> {
    i.root.read_string_opt(path)?.with_context(|| format!("{} does not exist", i.root.path(path).display()))
}
