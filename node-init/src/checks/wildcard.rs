//! `dns_wildcard`: a name nobody registered, `<random>.<dns.domain>`, must
//! not resolve. A wildcard record in the MAAS zone, or in a zone that
//! resolv.conf's `search` list appends, answers every name: then a missing
//! `api`, VIP or node record resolves to the wildcard's address instead of
//! failing, and the cluster talks to the wrong host. The name is asked of
//! the system resolver's servers (resolv.conf, what kubelet and containerd
//! ask) with its trailing dot, and without it in every form glibc would try
//! ([`crate::dns::Search`]). Any address fails, naming the name and the
//! answer; a server that does not answer is "could not run".

use anyhow::{Result, bail};
use async_trait::async_trait;
use futures_util::future::join_all;

use super::{Check, Finding, Inputs, fail, pass};
use crate::dns::{Answer, Search, Server};

pub struct Wildcard;

#[async_trait]
impl Check for Wildcard {
    fn name(&self) -> &'static str {
        "dns_wildcard"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        if i.node.system_servers.is_empty() {
            bail!("no nameserver in /etc/resolv.conf to ask");
        }
        let search = Search::of(i.root)?;
        let name = format!("nodeinit-{:012x}.{}", fastrand::u64(..) >> 16, i.config.dns.domain);
        let mut names = vec![name.clone()];
        for c in search.candidates(&name) {
            if !names.contains(&c) {
                names.push(c);
            }
        }
        let servers: Vec<Server> = i.node.system_servers.iter().map(|a| Server::new(*a, i.query_timeout)).collect();
        let asks = servers.iter().flat_map(|s| names.iter().map(move |n| (s, n)));
        let answers = join_all(asks.map(|(s, n)| async move { (s.addr, n, s.addresses(n).await) })).await;
        let (mut hits, mut unknown) = (Vec::new(), Vec::new());
        for (server, n, a) in &answers {
            match a {
                Answer::Addresses(_) => hits.push(format!("{n} answered {a} via {server}")),
                Answer::NxDomain | Answer::NoRecords => {}
                other => unknown.push(format!("{n} via {server}: {other}")),
            }
        }
        let how = match &names[1..] {
            [] => format!("{name}, with and without the trailing dot (no search domains)"),
            searched => format!("{name}, with and without the trailing dot, and as searched: {}", searched.join(", ")),
        };
        if !hits.is_empty() {
            return Ok(fail(format!(
                "a name nobody registered resolves: {}; a wildcard answers for missing names (asked: {how})",
                hits.join("; ")
            )));
        }
        if !unknown.is_empty() {
            bail!("{}", unknown.join("; "));
        }
        let via: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
        Ok(pass(format!("no wildcard: nothing answers {how} via {}", via.join(", "))))
    }
}
