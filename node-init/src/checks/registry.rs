//! `registry`: the registries the cluster pulls from answer the registry
//! API. kubeadm pulls the control plane's images, and containerd the
//! sandbox image, from `kubernetes.image_repository`, else registry.k8s.io;
//! init, and a control-plane join with `kubernetes.vip`, also pull kube-vip
//! from its image's registry (ghcr.io, or a mirror).
//!
//! Each gets `GET /v2/` over TLS as containerd would send it: through the
//! proxy with CONNECT unless its NO_PROXY covers the host, verified against
//! the system bundle plus `proxy.ca_cert` (egress's code). 200 (an open
//! registry) and 401 (one that hands out tokens, as registry.k8s.io and
//! ghcr.io do) both mean a registry answers; anything else names the step
//! that failed. No trusted CA at all is "could not run".

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Result, bail};
use async_trait::async_trait;
use futures_util::future::join_all;

use super::egress::{open_tls, proxy, step, tls_config};
use super::{Check, Finding, Inputs, every, fail, pass, skip};
use crate::config::{DEFAULT_IMAGE_REPOSITORY, Kubernetes, Member, Role};

pub struct Registry;

#[async_trait]
impl Check for Registry {
    fn name(&self) -> &'static str {
        "registry"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let Some(k) = &i.config.kubernetes else { return Ok(skip("no kubernetes section: nothing is pulled")) };
        let tls = Arc::new(tls_config(i)?);
        let hosts = registries(k);
        let results = join_all(hosts.iter().map(|h| ask(i, h, tls.clone()))).await;
        let results = results.into_iter().zip(&hosts).map(|(r, h)| r.map_err(|e| format!("{h}: {e:#}"))).collect();
        Ok(match every(results) {
            Ok(ok) => pass(ok.join("; ")),
            Err(failed) => fail(failed),
        })
    }
}

/// `GET https://authority/v2/`, through the proxy unless NO_PROXY says not.
async fn ask(i: &Inputs<'_>, authority: &str, tls: Arc<rustls::ClientConfig>) -> Result<String> {
    let (host, port) = split_port(authority);
    let via = proxy(i).filter(|_| !bypasses(host, &no_proxy(i)));
    let mut s = open_tls(i, host, port, via, tls).await?;
    let head = step(i.query_timeout, "GET /v2/", super::http::get(&mut s, authority, "/v2/")).await?;
    let how = via.map_or_else(|| "directly".to_owned(), |p| format!("through {p}"));
    match head.code {
        200 | 401 => Ok(format!("{authority} answers /v2/ ({}) {how}", head.status_line)),
        _ => bail!("GET /v2/ {how} answered {:?}: not a registry API (expected 200 or 401)", head.status_line),
    }
}

/// The registries this node's role pulls from, each once.
fn registries(k: &Kubernetes) -> Vec<String> {
    // A repository always starts with its registry's host.
    let repository = k.image_repository.as_ref().map_or(DEFAULT_IMAGE_REPOSITORY, |r| r.0.as_str());
    let kube_vip = match &k.member {
        Member::Init { vip, .. } => Some(vip.image.as_str()),
        Member::Worker { .. } | Member::Joined { role: Role::Worker, .. } => None,
        Member::ControlPlane { .. } | Member::Joined { .. } => k.vip.as_ref().map(|v| v.image.as_str()),
    };
    let mut out = vec![repository.split('/').next().unwrap_or(repository).to_owned()];
    if let Some(r) = kube_vip.map(registry_of).filter(|r| !out.contains(r)) {
        out.push(r);
    }
    out
}

/// The registry an image reference names, as containerd reads it: a first
/// component with a dot or a port, or `localhost`, is a host; anything
/// else is on Docker Hub.
fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_owned(),
        _ => "registry-1.docker.io".to_owned(),
    }
}

fn split_port(authority: &str) -> (&str, u16) {
    match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().unwrap_or(443)),
        _ => (authority, 443),
    }
}

/// What containerd's NO_PROXY holds that could name a registry: the
/// operator's entries, the MAAS domain and the MAAS server (the proxy
/// stage adds both).
fn no_proxy(i: &Inputs<'_>) -> Vec<String> {
    let operator = i.config.proxy.iter().flat_map(|p| p.no_proxy.iter().map(|e| e.0.clone()));
    let ours = [Some(i.config.dns.domain.to_string()), i.node.maas_server.clone()];
    operator.chain(ours.into_iter().flatten()).collect()
}

/// Go's NO_PROXY rule (containerd's): `*` is everything, an IP or CIDR
/// covers literal addresses, a domain covers itself and its subdomains.
fn bypasses(host: &str, entries: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    entries.iter().any(|e| {
        let e = e.trim().to_ascii_lowercase();
        if e == "*" {
            return true;
        }
        if let Ok(net) = e.parse::<ipnet::IpNet>() {
            return ip.is_some_and(|ip| net.contains(&ip));
        }
        let d = e.trim_start_matches("*.").trim_start_matches('.');
        host == d || host.ends_with(&format!(".{d}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_of_an_image_is_its_first_component_when_that_is_a_host() {
        assert_eq!(registry_of("mirror.corp:5000/kube-vip/kube-vip:v0.8.10"), "mirror.corp:5000");
        assert_eq!(registry_of("ghcr.io/kube-vip/kube-vip:v0.8.10"), "ghcr.io");
        assert_eq!(registry_of("localhost/kube-vip:v1"), "localhost");
        assert_eq!(registry_of("plndr/kube-vip:v0.3.1"), "registry-1.docker.io");
        assert_eq!(registry_of("kube-vip:v0.3.1"), "registry-1.docker.io");
        assert_eq!(split_port("mirror.corp:5000"), ("mirror.corp", 5000));
        assert_eq!(split_port("ghcr.io"), ("ghcr.io", 443));
    }

    #[test]
    fn no_proxy_covers_domains_their_subdomains_and_cidrs() {
        let e: Vec<String> = ["maas", ".corp.example", "10.0.0.0/8"].map(String::from).to_vec();
        assert!(bypasses("mirror.maas", &e) && bypasses("maas", &e));
        assert!(bypasses("r.corp.example", &e) && bypasses("10.1.2.3", &e));
        assert!(!bypasses("registry.k8s.io", &e) && !bypasses("notmaas", &e) && !bypasses("11.0.0.1", &e));
        assert!(bypasses("ghcr.io", &["*".to_owned()]));
    }
}
