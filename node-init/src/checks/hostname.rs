//! `hostname`: the node's name (its FQDN, kubeadm's
//! `nodeRegistration.name`) is one Kubernetes accepts, a lowercase RFC 1123
//! subdomain that is not `localhost`, and the kernel's hostname is the
//! name MAAS gave: its first label is the FQDN's. A node that booted as
//! `localhost` or as `ubuntu`, or was renamed by hand, registers under a
//! name that neither DNS nor MAAS knows.

use anyhow::{Result, anyhow};
use async_trait::async_trait;

use super::kernel::read;
use super::{Check, Finding, Inputs, fail, pass};

pub struct Hostname;

#[async_trait]
impl Check for Hostname {
    fn name(&self) -> &'static str {
        "hostname"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let fqdn = i.node.fqdn.as_deref().map_err(|why| anyhow!("the node's FQDN is unknown ({why}): set hostname"))?;
        let kernel = read(i, "/proc/sys/kernel/hostname")?.trim().to_owned();
        if let Err(why) = rfc1123(fqdn) {
            return Ok(fail(format!("the node name {fqdn:?} is not a lowercase RFC 1123 name: {why}")));
        }
        let first = |n: &str| n.split('.').next().unwrap_or_default().to_ascii_lowercase();
        if first(fqdn) == "localhost" {
            return Ok(fail(format!("the node name is {fqdn}: every machine is localhost; MAAS gave no name")));
        }
        if first(&kernel) != first(fqdn) {
            return Ok(fail(format!(
                "the kernel hostname is {kernel:?}, but the node is {fqdn}: set the hostname to {} (or fix hostname:)",
                first(fqdn)
            )));
        }
        Ok(pass(format!("{fqdn} is a valid node name and the kernel hostname {kernel} matches it")))
    }
}

/// A lowercase RFC 1123 subdomain, as Kubernetes wants node names: labels
/// of 1 to 63 of `a-z0-9-` that neither start nor end with `-`, at most
/// 253 characters in all.
fn rfc1123(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{} characters (1 to 253 allowed)", name.len()));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("the label {label:?} has {} characters (1 to 63 allowed)", label.len()));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            return Err(format!("{c:?} in {label:?} (only a-z, 0-9 and - are allowed)"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label {label:?} starts or ends with -"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;
    use crate::config::Config;
    use crate::testing::World;
    use std::time::Duration;

    fn verdict(w: &World) -> Result<Finding> {
        let config = Config::default();
        let i = Inputs::new(&w.root, &config, &w.node, &w.runner, Duration::from_secs(1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(Hostname.run(&i))
    }

    #[test]
    fn rfc1123_names() {
        assert!(rfc1123("node1.dc1.example").is_ok());
        assert_eq!(rfc1123("node_1.maas").unwrap_err(), "'_' in \"node_1\" (only a-z, 0-9 and - are allowed)");
        assert!(rfc1123("Node1.maas").is_err() && rfc1123("-a.maas").is_err() && rfc1123("a..maas").is_err());
        assert!(rfc1123(&format!("{}.maas", "a".repeat(64))).is_err());
    }

    #[test]
    fn the_kernel_hostname_must_be_the_name_maas_gave() {
        let mut w = World::new();
        assert!(verdict(&w).unwrap_err().to_string().contains("/proc/sys/kernel/hostname does not exist"));
        w.write("/proc/sys/kernel/hostname", "node1\n");
        assert_eq!(verdict(&w).unwrap().status, Status::Pass);
        w.write("/proc/sys/kernel/hostname", "node1.maas\n");
        assert_eq!(verdict(&w).unwrap().status, Status::Pass);
        w.write("/proc/sys/kernel/hostname", "ubuntu\n");
        let f = verdict(&w).unwrap();
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.reason,
            "the kernel hostname is \"ubuntu\", but the node is node1.maas: set the hostname to node1 (or fix hostname:)"
        );
        w.node.fqdn = Ok("localhost.maas".into());
        w.write("/proc/sys/kernel/hostname", "localhost\n");
        assert!(verdict(&w).unwrap().reason.contains("every machine is localhost"));
        w.node.fqdn = Err("no hostname".into());
        assert!(verdict(&w).unwrap_err().to_string().contains("FQDN is unknown"));
    }
}
