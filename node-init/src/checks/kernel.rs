//! What kubeadm's own preflight insists on: swap off, IPv4 forwarding on,
//! and the `overlay` and `br_netfilter` modules loaded.

use async_trait::async_trait;

use super::{Check, Facts, Finding, fail, pass};

pub struct Swap;
pub struct IpForward;
pub struct Modules;

#[async_trait]
impl Check for Swap {
    fn name(&self) -> &'static str {
        "swap"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        let Ok(Some(t)) = f.root.read_string_opt("/proc/swaps") else { return fail("cannot read /proc/swaps") };
        let on: Vec<&str> = t.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
        if on.is_empty() {
            pass("swap is off")
        } else {
            fail(format!("swap is on ({}): kubelet refuses to start", on.join(", ")))
        }
    }
}

#[async_trait]
impl Check for IpForward {
    fn name(&self) -> &'static str {
        "ip_forward"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        match f.root.read_string_opt("/proc/sys/net/ipv4/ip_forward") {
            Ok(Some(v)) if v.trim() == "1" => pass("net.ipv4.ip_forward = 1"),
            Ok(Some(v)) => fail(format!("net.ipv4.ip_forward = {} (kubeadm needs 1)", v.trim())),
            _ => fail("cannot read /proc/sys/net/ipv4/ip_forward"),
        }
    }
}

#[async_trait]
impl Check for Modules {
    fn name(&self) -> &'static str {
        "modules"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        // Loaded as a module or built in: both show under /sys/module.
        let missing: Vec<&str> =
            ["overlay", "br_netfilter"].into_iter().filter(|m| !f.root.exists(format!("/sys/module/{m}"))).collect();
        if missing.is_empty() {
            pass("overlay, br_netfilter loaded")
        } else {
            fail(format!("not loaded: {}", missing.join(", ")))
        }
    }
}
