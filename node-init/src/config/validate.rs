//! From the document as written to the configuration the program uses:
//! the rules that span keys, and what each role needs, checked once here so
//! that nothing later has to assume it.

use super::values::*;
use super::{Config, Kubernetes, KubernetesDoc, Member, PREFLIGHT, Role, default_pod_cidr, default_service_cidr};

/// The offending key and why.
type Rejection = (String, String);

fn reject<T>(key: &str, message: impl Into<String>) -> Result<T, Rejection> {
    Err((key.to_owned(), message.into()))
}

impl<K> Config<K> {
    /// The pod and service CIDRs in force: configured, else kubeadm-style
    /// defaults, which `verify` checks even on a node with no config.
    pub fn cidrs(&self) -> (Cidr, Cidr)
    where
        K: Cidrs,
    {
        self.kubernetes.as_ref().map_or((default_pod_cidr(), default_service_cidr()), Cidrs::cidrs)
    }
}

/// Both forms of the `kubernetes:` section name their CIDRs.
pub trait Cidrs {
    fn cidrs(&self) -> (Cidr, Cidr);
}

impl Cidrs for Kubernetes {
    fn cidrs(&self) -> (Cidr, Cidr) {
        (self.pod_cidr, self.service_cidr)
    }
}

impl Cidrs for KubernetesDoc {
    fn cidrs(&self) -> (Cidr, Cidr) {
        (self.pod_cidr, self.service_cidr)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The document, checked, as the program's configuration.
pub fn validate(doc: Config<KubernetesDoc>) -> Result<Config, Rejection> {
    if let Some(p) = &doc.proxy {
        if p.http.is_none() && p.https.is_none() && p.ca_cert.is_none() {
            return reject("proxy", "set at least one of http, https, ca_cert (or remove the proxy key)");
        }
        for (i, der) in p.ca_cert.iter().flat_map(|c| c.der.iter()).enumerate() {
            if let Err(e) = crate::pki::check_ca(der, now()) {
                return reject("proxy.ca_cert", format!("certificate {}: {e:#}", i + 1));
            }
        }
    }
    let kubernetes = doc.kubernetes.map(kubernetes).transpose()?;
    Ok(Config {
        hostname: doc.hostname,
        os: doc.os,
        proxy: doc.proxy,
        dns: doc.dns,
        kubernetes,
        resources: doc.resources,
        time: doc.time,
        run: doc.run,
    })
}

fn kubernetes(k: KubernetesDoc) -> Result<Kubernetes, Rejection> {
    let (pod, svc) = (k.pod_cidr, k.service_cidr);
    if pod.overlaps(&svc.0) {
        return reject("kubernetes.service_cidr", format!("{svc} overlaps kubernetes.pod_cidr {pod}"));
    }
    if k.token.is_none() {
        return reject("kubernetes.token", "required for every role");
    }
    if k.vip.is_some() || k.role == Role::Init {
        vip(&k.vip.clone().unwrap_or_default(), &k.endpoint)?;
    }
    kubelet_args(&k.kubelet_extra_args)?;
    for (i, name) in k.ignore_preflight.iter().enumerate() {
        if !PREFLIGHT.contains(&name.as_str()) {
            return reject(
                &format!("kubernetes.ignore_preflight[{i}]"),
                format!("{name:?} is not a preflight check (expected one of {})", PREFLIGHT.join(", ")),
            );
        }
    }
    peers(&k.peers, &k.endpoint)?;
    let material = Material { token: k.token, certificate_key: k.certificate_key, ca: k.ca };
    let member = member(k.role, k.ca_cert_hashes, material, k.vip.clone())?;
    let vip = match &member {
        Member::Init { vip, .. } => Some(vip.clone()),
        Member::Joined { role: Role::Init, .. } => Some(k.vip.unwrap_or_default()),
        _ => k.vip,
    };
    Ok(Kubernetes {
        endpoint: k.endpoint,
        version: k.version,
        pod_cidr: pod,
        service_cidr: svc,
        vip,
        discovery_timeout: k.discovery_timeout,
        token_ttl: k.token_ttl,
        kubelet_extra_args: k.kubelet_extra_args,
        image_repository: k.image_repository,
        ignore_preflight: k.ignore_preflight,
        advertise_address: k.advertise_address,
        peers: k.peers,
        member,
    })
}

/// The secret keys of a role's join material, as written.
struct Material {
    token: Option<Held<Token>>,
    certificate_key: Option<Held<CertKey>>,
    ca: Option<super::ClusterCaDoc>,
}

impl Material {
    /// Whether node-init scrubbed any of the role's secret keys. Any, not
    /// all: a node cut off while scrubbing its layers one by one, or given
    /// fresh material for some keys only, has no material to join with.
    fn scrubbed(&self, role: Role) -> bool {
        let token = self.token.as_ref().is_some_and(Held::is_scrubbed);
        let key = role != Role::Worker && self.certificate_key.as_ref().is_some_and(Held::is_scrubbed);
        let ca = role == Role::Init && self.ca.as_ref().is_some_and(|c| c.key.is_scrubbed());
        token || key || ca
    }
}

/// The role with its material, or the first key it lacks. A node whose
/// secret keys read `scrubbed` (see [`SCRUBBED`]) is [`Member::Joined`].
fn member(
    role: Role,
    ca_cert_hashes: Vec<CaHash>,
    material: Material,
    vip: Option<super::Vip>,
) -> Result<Member, Rejection> {
    if material.scrubbed(role) {
        return Ok(Member::Joined { role, ca_cert_hashes });
    }
    let Material { token, certificate_key, ca } = material;
    let Some(token) = token.and_then(Held::present) else {
        return reject("kubernetes.token", "required for every role");
    };
    let pins = || -> Result<Vec<CaHash>, Rejection> {
        if ca_cert_hashes.is_empty() {
            return reject("kubernetes.ca_cert_hashes", "a join needs at least one sha256: CA pin");
        }
        Ok(ca_cert_hashes.clone())
    };
    let key = || certificate_key.clone().and_then(Held::present).ok_or(());
    let key_missing = || reject("kubernetes.certificate_key", "required for init and control-plane");
    Ok(match role {
        Role::Worker => Member::Worker { token, ca_cert_hashes: pins()? },
        Role::ControlPlane => {
            let ca_cert_hashes = pins()?;
            let Ok(certificate_key) = key() else { return key_missing() };
            Member::ControlPlane { token, ca_cert_hashes, certificate_key }
        }
        Role::Init => {
            let Ok(certificate_key) = key() else { return key_missing() };
            let Some(super::ClusterCaDoc { cert, key: Held::Present(key) }) = ca else {
                return reject("kubernetes.ca", "init needs the pre-seeded cluster CA (cert and key)");
            };
            let ca = super::ClusterCa { cert, key };
            // kube-vip holds the VIP from the first node on; its interface
            // is derived from the node unless `vip.interface` says.
            let vip = vip.unwrap_or_default();
            cluster_ca(&ca)?;
            Member::Init { token, ca, certificate_key, vip }
        }
    })
}

fn vip(v: &super::Vip, endpoint: &Endpoint) -> Result<(), Rejection> {
    if v.interface.as_ref().is_some_and(|i| i.is_empty() || i.len() > 15 || i.contains('/')) {
        return reject("kubernetes.vip.interface", "expected a network interface name such as eth0");
    }
    if endpoint.ip().is_none() {
        return reject(
            "kubernetes.endpoint",
            format!("{endpoint} names a host; kube-vip holds an address, so with vip set the endpoint is VIP:port"),
        );
    }
    if v.image.is_empty() || v.image.chars().any(char::is_whitespace) {
        return reject("kubernetes.vip.image", "expected an image reference such as ghcr.io/kube-vip/kube-vip:v0.8.10");
    }
    Ok(())
}

/// Each peer once, and none of them the VIP, which is no node's own.
fn peers(peers: &[Peer], endpoint: &Endpoint) -> Result<(), Rejection> {
    for (i, p) in peers.iter().enumerate() {
        let key = format!("kubernetes.peers[{i}]");
        if let Some(first) = peers[..i].iter().position(|q| q.address == p.address) {
            return reject(&key, format!("{} is listed twice (also kubernetes.peers[{first}])", p.address));
        }
        if endpoint.ip() == Some(p.address) {
            return reject(
                &key,
                format!("{} is the endpoint's VIP; peers are the other nodes' own addresses", p.address),
            );
        }
        if p.address.is_unspecified() || p.address.is_loopback() || p.address.is_multicast() {
            return reject(&key, format!("{} is no node's address; expected another node's own address", p.address));
        }
    }
    Ok(())
}

fn kubelet_args(args: &std::collections::BTreeMap<String, String>) -> Result<(), Rejection> {
    for (flag, value) in args {
        let key = format!("kubernetes.kubelet_extra_args.{flag}");
        let ok = !flag.is_empty()
            && !flag.starts_with('-')
            && flag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return reject(&key, "expected a kubelet flag name without dashes in front, e.g. node-labels");
        }
        if value.contains('\n') {
            return reject(&key, "a flag value is one line");
        }
    }
    Ok(())
}

/// The init node's CA: its key belongs to it and it is a valid CA now.
fn cluster_ca(ca: &super::ClusterCa) -> Result<(), Rejection> {
    match crate::pki::key_matches_certificate(&ca.cert.der[0], ca.key.0.expose().as_bytes()) {
        Ok(true) => {}
        Ok(false) => return reject("kubernetes.ca.key", "does not belong to kubernetes.ca.cert (value redacted)"),
        Err(e) => return reject("kubernetes.ca.key", format!("{e:#} (value redacted)")),
    }
    if let Err(e) = crate::pki::check_ca(&ca.cert.der[0], now()) {
        return reject("kubernetes.ca.cert", format!("{e:#}"));
    }
    Ok(())
}
