//! Stage `dns`: the node's FQDN resolves through the MAAS DNS server(s) to
//! one of the node's own addresses, its PTR names it back, and every name in
//! `dns.require` resolves (DESIGN.md §pipeline step 3).
//!
//! MAAS writes its zone asynchronously after deployment, so a wrong answer
//! is retried with backoff until `dns.timeout`; then the stage fails naming
//! each name, server and answer. Every server must answer right: a stale or
//! dead MAAS DNS server breaks lookups for whoever asks it. One exception:
//! when the servers are the system's (no `dns.nameservers`) and there are
//! several, a server that does not know the zone at all (NXDOMAIN, no
//! records, REFUSED, SERVFAIL) while another answers right is a warning
//! in the state: a site resolver beside MAAS's. A server that answers a
//! wrong address still fails the stage: whoever asks it gets that address.
//! A missing or mismatched PTR is a warning, never a failure.
//! Under `--root` the stage is skipped: an image has no place in the zone.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use async_trait::async_trait;
use futures_util::future::join_all;
use tokio::time::Instant;

use crate::config::Config;
use crate::dns::{Answer, Server, forward_verdict, reverse_warning};
use crate::retry::Backoff;
use crate::stages::{Ahead, Context, Details, Done, Fingerprint, Outcome, Stage};

/// Waits between rounds: 1 s doubling to 15 s, bounded by `dns.timeout`.
const ROUNDS: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(15), attempts: u32::MAX };
/// One question's deadline (less when `dns.timeout` is shorter).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct DnsStage;

#[async_trait]
impl Stage for DnsStage {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn inputs(&self, c: &Config, f: &mut Fingerprint) {
        f.add("hostname", c.hostname.as_ref().map_or("", |h| h.as_str())).add("domain", &c.dns.domain);
        for n in &c.dns.nameservers {
            f.add("nameserver", n.0);
        }
        for n in &c.dns.require {
            f.add("require", n);
        }
    }

    fn ahead_slots(&self, _: &Config) -> &'static [&'static str] {
        &["dns"]
    }

    /// The same wait, beside the patch: it asks only the zone. Its success
    /// depends on the FQDN and addresses it was made for (and the inputs),
    /// so after a reboot with the same ones it is taken, not asked again.
    async fn ahead(&self, cx: &Context<'_>, ahead: &Ahead) {
        if cx.node.addresses.is_empty() {
            return;
        }
        let mut f = ahead.fingerprint();
        self.inputs(cx.config, &mut f);
        f.add("fqdn", cx.node.fqdn.as_deref().unwrap_or(""));
        for ip in cx.node.ips() {
            f.add("address", ip);
        }
        let key = f.finish();
        ahead.run("dns", Some(key), resolve(cx)).await;
    }

    async fn run(&self, cx: &Context<'_>) -> Result<Outcome> {
        if cx.node.addresses.is_empty() {
            // Under --root: an image has no addresses and no place in the zone yet.
            return Ok(Outcome::Skipped(
                "the node's addresses are unknown (--root); checked on the booted node".into(),
            ));
        }
        // Resolved ahead: taken. Still waiting: stopped, and the wait
        // starts afresh now with all of `dns.timeout`, as a serial run's.
        if let Some(done) = cx.ahead().and_then(|a| a.take("dns")) {
            return Ok(Outcome::Done(done));
        }
        resolve(cx).await.map(Outcome::Done)
    }
}

/// Asks every server, round after round, until each answers right or
/// `dns.timeout` (from now) passes.
async fn resolve(cx: &Context<'_>) -> Result<Done> {
    let fqdn = match &cx.node.fqdn {
        Ok(f) => f.clone(),
        Err(why) => bail!("the node's FQDN is unknown ({why}): set hostname, or let MAAS set local-hostname"),
    };
    let servers = cx.node.maas_servers.clone();
    if servers.is_empty() {
        bail!("no DNS server to ask: set dns.nameservers, or list the MAAS server in /etc/resolv.conf");
    }
    let timeout = cx.config.dns.timeout.0;
    let deadline = Instant::now() + timeout;
    let query_timeout = QUERY_TIMEOUT.min(timeout);
    let servers: Vec<Server> = servers.into_iter().map(|a| Server::new(a, query_timeout)).collect();
    let mut attempt = 1;
    loop {
        let tolerate = cx.config.dns.nameservers.is_empty() && servers.len() > 1;
        let round = check(&servers, &fqdn, &cx.node.ips(), &cx.config.dns.require, tolerate).await;
        if round.problems.is_empty() {
            for w in &round.warnings {
                tracing::warn!("{w}");
            }
            return Ok(round.done(&fqdn, attempt));
        }
        tracing::info!(attempt, problems = %round.problems.join("; "), "not resolved yet");
        if !ROUNDS.wait(attempt, deadline).await {
            bail!(
                "{} (still after {} and {attempt} rounds)",
                round.problems.join("; "),
                humantime::format_duration(timeout)
            );
        }
        attempt += 1;
    }
}

#[derive(Debug, Default)]
pub struct Round {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// The address the FQDN resolved to that is the node's own.
    pub address: Option<IpAddr>,
    /// The FQDN's answer from a server that does not know the name at all.
    pub unknown: Vec<String>,
}

impl Round {
    fn done(&self, fqdn: &str, rounds: u32) -> Done {
        let mut d = Details::new();
        d.insert("fqdn".into(), fqdn.into());
        d.insert("address".into(), self.address.map(|a| a.to_string()).into());
        d.insert("rounds".into(), rounds.into());
        if self.warnings.is_empty() {
            return Done::new(d);
        }
        d.insert("warnings".into(), self.warnings.clone().into());
        Done::new(d).summary(self.warnings.join("; "))
    }
}

/// One round of questions, to every server at once. With `tolerate`, a
/// server that does not know the FQDN is a warning when another server
/// answered it right; otherwise, and always without `tolerate`, a problem.
pub async fn check(
    servers: &[Server],
    fqdn: &str,
    own: &[IpAddr],
    require: &[impl AsRef<str>],
    tolerate: bool,
) -> Round {
    let per_server = join_all(servers.iter().map(|s| check_server(s, fqdn, own, require))).await;
    let mut round = Round::default();
    for r in per_server {
        round.problems.extend(r.problems);
        round.warnings.extend(r.warnings);
        round.unknown.extend(r.unknown);
        round.address = round.address.or(r.address);
    }
    let unknown = std::mem::take(&mut round.unknown);
    match round.address {
        Some(ip) if tolerate => round.warnings.extend(
            unknown
                .into_iter()
                .map(|u| format!("{u} (another server answered {ip}: ignored, it does not know the zone)")),
        ),
        _ => round.problems.extend(unknown),
    }
    round
}

async fn check_server(s: &Server, fqdn: &str, own: &[IpAddr], require: &[impl AsRef<str>]) -> Round {
    let mut round = Round::default();
    let (forward, required) = tokio::join!(
        s.addresses(fqdn),
        join_all(require.iter().map(|n| async move { (n, s.addresses(n.as_ref()).await) }))
    );
    match forward_verdict(&forward, own) {
        Ok(ip) => {
            round.address = Some(ip);
            if let Some(w) = reverse_warning(s.addr, ip, &s.names(ip).await, fqdn) {
                round.warnings.push(w);
            }
        }
        Err(why) if matches!(forward, Answer::NxDomain | Answer::NoRecords | Answer::Code(_)) => {
            round.unknown.push(format!("{fqdn} via {}: {why}", s.addr));
        }
        Err(why) => round.problems.push(format!("{fqdn} via {}: {why}", s.addr)),
    }
    for (name, answer) in required {
        if answer.addresses().is_empty() {
            round.problems.push(format!("{} via {}: {answer}", name.as_ref(), s.addr));
        }
    }
    round
}

#[cfg(test)]
mod tests;
