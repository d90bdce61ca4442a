//! DNS checks, each asking every MAAS DNS server at once so a dead server
//! costs one timeout: the FQDN forward and reverse, the zone's SOA, the
//! delegation (the system resolver agrees with MAAS), and `dns.require`.

use std::net::IpAddr;

use async_trait::async_trait;
use futures_util::future::join_all;

use super::{Check, Facts, Finding, Status, every, fail, pass};
use crate::dns::{Answer, Server};
use crate::stages::dns::{forward_verdict, reverse_warning};

/// The MAAS DNS servers to ask, or the failure when there is none.
fn maas(f: &Facts<'_>) -> Result<Vec<Server>, Finding> {
    if f.maas_servers.is_empty() {
        return Err(fail("no DNS server: set dns.nameservers or /etc/resolv.conf"));
    }
    Ok(f.maas_servers.iter().map(|a| Server::new(*a, f.query_timeout)).collect())
}

/// The FQDN and the MAAS servers, or why the check failed.
fn inputs<'f>(f: &'f Facts<'_>) -> Result<(&'f str, Vec<Server>), Finding> {
    let Some(fqdn) = f.fqdn.as_deref() else { return Err(fail("the node's FQDN is unknown: set hostname")) };
    Ok((fqdn, maas(f)?))
}

fn own(f: &Facts<'_>) -> Vec<IpAddr> {
    f.addresses.iter().map(|a| a.net.addr()).collect()
}

/// Every server must pass.
fn all(results: Vec<Result<String, String>>, what: &str) -> Finding {
    match every(results) {
        Ok(ok) => pass(format!("{what}: {}", ok.join("; "))),
        Err(failed) => fail(failed),
    }
}

pub struct Forward;

#[async_trait]
impl Check for Forward {
    fn name(&self) -> &'static str {
        "dns_forward"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        let (fqdn, servers) = match inputs(f) {
            Ok(i) => i,
            Err(finding) => return finding,
        };
        let own = own(f);
        let results = join_all(servers.iter().map(|s| async {
            let answer = s.addresses(fqdn).await;
            forward_verdict(&answer, &own)
                .map(|ip| format!("{ip} via {}", s.addr))
                .map_err(|e| format!("{fqdn} via {}: {e}", s.addr))
        }))
        .await;
        all(results, fqdn)
    }
}

pub struct Reverse;

#[async_trait]
impl Check for Reverse {
    fn name(&self) -> &'static str {
        "dns_reverse"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        let (fqdn, servers) = match inputs(f) {
            Ok(i) => i,
            Err(finding) => return finding,
        };
        let own = own(f);
        let results = join_all(servers.iter().map(|s| async {
            let ip = forward_verdict(&s.addresses(fqdn).await, &own)
                .map_err(|e| format!("no address of this node to look up via {}: {e}", s.addr))?;
            match reverse_warning(s.addr, ip, &s.names(ip).await, fqdn) {
                None => Ok(format!("{ip} via {}", s.addr)),
                Some(w) => Err(w),
            }
        }))
        .await;
        all(results, &format!("PTR names {fqdn}"))
    }
}

pub struct Zone;

#[async_trait]
impl Check for Zone {
    fn name(&self) -> &'static str {
        "dns_zone"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        let zone = f.config.dns.domain.as_str();
        let servers = match maas(f) {
            Ok(s) => s,
            Err(finding) => return finding,
        };
        let results = join_all(servers.into_iter().map(|s| async move {
            match s.soa(zone).await {
                Answer::Names(n) => Ok(format!("{} via {}", n.join(", "), s.addr)),
                other => Err(format!("SOA of {zone} via {}: {other}", s.addr)),
            }
        }))
        .await;
        all(results, &format!("{zone} served, SOA"))
    }
}

pub struct Delegation;

#[async_trait]
impl Check for Delegation {
    fn name(&self) -> &'static str {
        "dns_delegation"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        if f.config.dns.nameservers.is_empty() {
            return (Status::Skip, "dns.nameservers not set: the system resolver is the MAAS DNS".into());
        }
        let (fqdn, maas) = match inputs(f) {
            Ok(i) => i,
            Err(finding) => return finding,
        };
        let Some(system) = f.system_servers.first() else { return fail("no nameserver in /etc/resolv.conf") };
        let system = Server::new(*system, f.query_timeout);
        let (theirs, ours) = tokio::join!(system.addresses(fqdn), maas[0].addresses(fqdn));
        let (mut a, mut b) = (theirs.addresses().to_vec(), ours.addresses().to_vec());
        a.sort();
        b.sort();
        if !b.is_empty() && a == b {
            pass(format!("{fqdn}: {} and {} agree ({theirs})", system.addr, maas[0].addr))
        } else {
            fail(format!(
                "{fqdn}: the system resolver {} answers {theirs}, MAAS {} answers {ours}",
                system.addr, maas[0].addr
            ))
        }
    }
}

pub struct Require;

#[async_trait]
impl Check for Require {
    fn name(&self) -> &'static str {
        "dns_require"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        let names = &f.config.dns.require;
        if names.is_empty() {
            return (Status::Skip, "dns.require is empty".into());
        }
        let servers = match maas(f) {
            Ok(s) => s,
            Err(finding) => return finding,
        };
        let asks = servers.iter().flat_map(|s| names.iter().map(move |n| (s, n.as_str())));
        let results = join_all(asks.map(|(s, n)| async move {
            match s.addresses(n).await {
                Answer::Addresses(a) => Ok(format!("{n} {}", a[0])),
                other => Err(format!("{n} via {}: {other}", s.addr)),
            }
        }))
        .await;
        all(results, "resolved")
    }
}
