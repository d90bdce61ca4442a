//! Stage `proxy`: proxy settings everywhere they are read, and the proxy CA
//! in the system trust store (DESIGN.md §pipeline step 1).
//!
//! Files: `/etc/environment` (our marked block only), `/etc/profile.d/`,
//! apt's or dnf's proxy setting, systemd's `DefaultEnvironment`, and
//! drop-ins for containerd and kubelet. Rerunning writes nothing new;
//! removing `proxy:` from the config removes exactly what node-init wrote.

mod render;
pub mod trust;

use anyhow::Result;
use async_trait::async_trait;

use crate::config::{AptProxy, Config, Proxy};
use crate::distro::{self, Family};
use crate::root::Change;
use crate::stages::{Context, Details, Done, Fingerprint, Outcome, Stage};
pub use render::{NoProxyInputs, no_proxy};

pub const ENVIRONMENT: &str = "/etc/environment";
pub const PROFILE: &str = "/etc/profile.d/node-init-proxy.sh";
pub const APT: &str = "/etc/apt/apt.conf.d/90node-init-proxy";
/// MAAS's apt proxy, as curtin writes it at deployment.
pub const CURTIN_APT: &str = "/etc/apt/apt.conf.d/90curtin-aptproxy";
pub const DNF: &str = "/etc/dnf/dnf.conf";
pub const MANAGER: &str = "/etc/systemd/system.conf.d/node-init-proxy.conf";
pub const DROP_INS: [&str; 2] = [
    "/etc/systemd/system/containerd.service.d/node-init-proxy.conf",
    "/etc/systemd/system/kubelet.service.d/node-init-proxy.conf",
];

pub struct ProxyStage;

#[async_trait]
impl Stage for ProxyStage {
    fn name(&self) -> &'static str {
        "proxy"
    }

    /// Everything that lands in a file: the URLs (secrets: they may carry
    /// a password), NO_PROXY's sources and the CA.
    fn inputs(&self, c: &Config, f: &mut Fingerprint) {
        let (pod, service) = c.cidrs();
        f.add("domain", &c.dns.domain).add("pod_cidr", pod).add("service_cidr", service);
        if let Some(k) = &c.kubernetes {
            f.add("endpoint", &k.endpoint);
        }
        let Some(p) = &c.proxy else { return };
        f.secret("http", p.http.as_ref().map_or("", |u| u.expose()));
        f.secret("https", p.https.as_ref().map_or("", |u| u.expose()));
        for entry in &p.no_proxy {
            f.add("no_proxy", &entry.0);
        }
        f.add("ca_cert", p.ca_cert.as_ref().map_or("", |c| c.pem.as_str())).add("apt", p.apt.as_str());
    }

    async fn run(&self, cx: &Context<'_>) -> Result<Outcome> {
        let family = distro::family(cx.root)?;
        let proxy = cx.config.proxy.clone().unwrap_or_default();
        let mut details = Details::new();
        let mut changed = apply_environment(cx, family, &proxy, &mut details)?;
        match &proxy.ca_cert {
            Some(ca) => {
                let anchors = trust::install(cx, family, &ca.der).await?;
                details.insert("ca_anchors".into(), anchors.into());
            }
            None => {
                let removed = trust::remove(cx, family).await?;
                changed.extend(removed);
            }
        }
        if cx.config.proxy.is_none() && changed.is_empty() {
            return Ok(Outcome::Skipped("no proxy configured".into()));
        }
        details.insert("changed".into(), changed.into());
        let apt = details.get("apt").and_then(|v| v.as_str()).map(str::to_owned);
        let done = Done::new(details);
        Ok(Outcome::Done(match apt {
            Some(line) => done.summary(line),
            None => done,
        }))
    }
}

/// Writes (or removes) the proxy variables' files; returns what changed.
fn apply_environment(cx: &Context<'_>, family: Family, p: &Proxy, details: &mut Details) -> Result<Vec<String>> {
    let (http, https) = (p.http.as_ref().map(|u| u.expose()), p.https.as_ref().map(|u| u.expose()));
    let on = http.is_some() || https.is_some();
    let ips = cx.node.ips();
    let inputs = no_proxy_inputs(cx, p, &ips);
    let np = if on { no_proxy(&inputs) } else { Vec::new() };
    let vars = if on { render::variables(http, https, &np) } else { Vec::new() };
    // Files holding a proxy password are for root's consumers only.
    let secret_mode =
        if [&p.http, &p.https].iter().any(|u| u.as_ref().is_some_and(|u| u.has_password())) { 0o600 } else { 0o644 };
    let mut changed = Vec::new();
    let mut track = |path: &str, c: Change| {
        if c != Change::Unchanged {
            changed.push(path.to_owned());
        }
    };

    let env_now = cx.root.read_string_opt(ENVIRONMENT)?;
    if env_now.is_some() || on {
        let text = render::etc_environment(env_now.as_deref().unwrap_or_default(), &vars);
        track(ENVIRONMENT, cx.write(ENVIRONMENT, text.as_bytes(), 0o644)?);
    }
    match family {
        Family::Debian => {
            let apt = on && apt_uses_ours(cx, p, details)?;
            let conf = apt.then(|| render::apt_conf(http, https, &render::apt_direct_hosts(&inputs)));
            track(APT, put(cx, APT, conf, secret_mode)?)
        }
        Family::Rhel => {
            if let Some(now) = cx.root.read_string_opt(DNF)? {
                track(DNF, cx.write(DNF, render::dnf_conf(&now, https.or(http)).as_bytes(), 0o644)?);
            }
        }
    }
    track(PROFILE, put(cx, PROFILE, on.then(|| render::profile_d(&vars)), 0o644)?);
    track(MANAGER, put(cx, MANAGER, on.then(|| render::systemd_manager(&vars)), secret_mode)?);
    for path in DROP_INS {
        track(path, put(cx, path, on.then(|| render::systemd_service(&vars)), secret_mode)?);
    }
    if on {
        details.insert("no_proxy".into(), np.join(",").into());
    }
    Ok(changed)
}

/// Whether apt gets the corporate proxy (`proxy.apt`); says in `details`
/// when apt keeps MAAS's.
fn apt_uses_ours(cx: &Context<'_>, p: &Proxy, details: &mut Details) -> Result<bool> {
    let maas = cx.root.exists(CURTIN_APT);
    let (ours, said) = match (p.apt, maas) {
        (AptProxy::None, _) => (false, "apt: none (proxy.apt)".to_owned()),
        (AptProxy::Proxy, _) => (true, "apt: the proxy (proxy.apt)".to_owned()),
        (AptProxy::Inherit, true) => (false, format!("apt: MAAS's proxy ({CURTIN_APT})")),
        (AptProxy::Inherit, false) => (true, "apt: the proxy (no MAAS apt proxy)".to_owned()),
    };
    details.insert("apt".into(), said.into());
    Ok(ours)
}

/// Writes `content` to a file node-init owns whole, or removes the file.
fn put(cx: &Context<'_>, path: &str, content: Option<String>, mode: u32) -> Result<Change> {
    match content {
        Some(text) => cx.write(path, text.as_bytes(), mode),
        None => cx.remove(path),
    }
}

fn no_proxy_inputs<'a>(cx: &'a Context<'_>, p: &'a Proxy, ips: &'a [std::net::IpAddr]) -> NoProxyInputs<'a> {
    let (pod_cidr, service_cidr) = cx.config.cidrs();
    NoProxyInputs {
        operator: &p.no_proxy,
        addresses: ips,
        fqdn: cx.node.fqdn(),
        endpoint: cx.config.kubernetes.as_ref().map(|k| &k.endpoint),
        pod_cidr,
        service_cidr,
        domain: &cx.config.dns.domain,
        maas_server: cx.node.maas_server.as_deref(),
    }
}

#[cfg(test)]
mod tests;
