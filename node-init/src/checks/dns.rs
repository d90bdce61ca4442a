//! DNS checks, each asking every MAAS DNS server at once so a dead server
//! costs one timeout: the FQDN forward (and the endpoint's name) and
//! reverse, the zone's SOA, the delegation (the system resolver agrees
//! with MAAS), and `dns.require`.
//! The verdicts are the ones the `dns` stage gives ([`crate::dns`]).

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use async_trait::async_trait;
use futures_util::future::join_all;

use super::{Check, Finding, Inputs, every, fail, pass, skip};
use crate::config::Role;
use crate::dns::{Answer, Server, forward_verdict, reverse_warning};

/// The MAAS DNS servers to ask; with none there is nobody to ask.
fn maas(i: &Inputs<'_>) -> Result<Vec<Server>> {
    if i.node.maas_servers.is_empty() {
        bail!("no DNS server to ask: set dns.nameservers or list one in /etc/resolv.conf");
    }
    Ok(i.node.maas_servers.iter().map(|a| Server::new(*a, i.query_timeout)).collect())
}

/// The FQDN to ask for; unknown, there is nothing to ask.
fn fqdn<'i>(i: &'i Inputs<'_>) -> Result<&'i str> {
    i.node.fqdn.as_deref().map_err(|why| anyhow!("the node's FQDN is unknown ({why}): set hostname"))
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
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let (fqdn, servers, own) = (fqdn(i)?, maas(i)?, i.node.ips());
        let mut results = join_all(servers.iter().map(|s| async {
            let answer = s.addresses(fqdn).await;
            forward_verdict(&answer, &own)
                .map(|ip| format!("{ip} via {}", s.addr))
                .map_err(|e| format!("{fqdn} via {}: {e}", s.addr))
        }))
        .await;
        if let Some(k) = i.config.kubernetes.as_ref().filter(|k| k.endpoint.ip().is_none()) {
            let worker = k.role() == Role::Worker;
            let host = k.endpoint.host.as_str();
            results.extend(join_all(servers.iter().map(|s| endpoint(s, host, &own, worker))).await);
        }
        Ok(all(results, fqdn))
    }
}

/// `kubernetes.endpoint` when it is a name: it must resolve, and on a
/// worker never to the worker itself, which serves no API (a wildcard or a
/// stale record answering for the name). An IP endpoint is the `vip`
/// check's.
async fn endpoint(s: &Server, host: &str, own: &[IpAddr], worker: bool) -> Result<String, String> {
    match s.addresses(host).await {
        Answer::Addresses(a) if worker && a.iter().any(|ip| own.contains(ip)) => Err(format!(
            "kubernetes.endpoint {host} via {}: {}, this worker's own address; a worker serves no API",
            s.addr,
            Answer::Addresses(a)
        )),
        Answer::Addresses(a) => Ok(format!("endpoint {host} {} via {}", Answer::Addresses(a), s.addr)),
        other => Err(format!("kubernetes.endpoint {host} via {}: {other}", s.addr)),
    }
}

pub struct Reverse;

#[async_trait]
impl Check for Reverse {
    fn name(&self) -> &'static str {
        "dns_reverse"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let (fqdn, servers, own) = (fqdn(i)?, maas(i)?, i.node.ips());
        let results = join_all(servers.iter().map(|s| async {
            let ip = forward_verdict(&s.addresses(fqdn).await, &own)
                .map_err(|e| format!("no address of this node to look up via {}: {e}", s.addr))?;
            match reverse_warning(s.addr, ip, &s.names(ip).await, fqdn) {
                None => Ok(format!("{ip} via {}", s.addr)),
                Some(w) => Err(w),
            }
        }))
        .await;
        Ok(all(results, &format!("PTR names {fqdn}")))
    }
}

pub struct Zone;

#[async_trait]
impl Check for Zone {
    fn name(&self) -> &'static str {
        "dns_zone"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let zone = i.config.dns.domain.as_str();
        let results = join_all(maas(i)?.into_iter().map(|s| async move {
            match s.soa(zone).await {
                Answer::Names(n) => Ok(format!("{} via {}", n.join(", "), s.addr)),
                other => Err(format!("SOA of {zone} via {}: {other}", s.addr)),
            }
        }))
        .await;
        Ok(all(results, &format!("{zone} served, SOA")))
    }
}

pub struct Delegation;

#[async_trait]
impl Check for Delegation {
    fn name(&self) -> &'static str {
        "dns_delegation"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        if i.config.dns.nameservers.is_empty() {
            return Ok(skip("dns.nameservers not set: the system resolver is the MAAS DNS"));
        }
        let (fqdn, maas) = (fqdn(i)?, maas(i)?);
        let Some(system) = i.node.system_servers.first() else {
            return Ok(fail("no nameserver in /etc/resolv.conf"));
        };
        let system = Server::new(*system, i.query_timeout);
        let (theirs, ours) = tokio::join!(system.addresses(fqdn), maas[0].addresses(fqdn));
        let (mut a, mut b) = (theirs.addresses().to_vec(), ours.addresses().to_vec());
        a.sort();
        b.sort();
        Ok(if !b.is_empty() && a == b {
            pass(format!("{fqdn}: {} and {} agree ({theirs})", system.addr, maas[0].addr))
        } else {
            fail(format!(
                "{fqdn}: the system resolver {} answers {theirs}, MAAS {} answers {ours}",
                system.addr, maas[0].addr
            ))
        })
    }
}

pub struct Require;

#[async_trait]
impl Check for Require {
    fn name(&self) -> &'static str {
        "dns_require"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let names = &i.config.dns.require;
        if names.is_empty() {
            return Ok(skip("dns.require is empty"));
        }
        let servers = maas(i)?;
        let asks = servers.iter().flat_map(|s| names.iter().map(move |n| (s, n.as_str())));
        let results = join_all(asks.map(|(s, n)| async move {
            match s.addresses(n).await {
                Answer::Addresses(a) => Ok(format!("{n} {}", a[0])),
                other => Err(format!("{n} via {}: {other}", s.addr)),
            }
        }))
        .await;
        Ok(all(results, "resolved"))
    }
}
