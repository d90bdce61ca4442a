//! The MAAS side, checked before `up` changes anything: the key works; the
//! image is uploaded and complete; enough Ready machines match; the VIP
//! lies in a MAAS subnet, outside its dynamic ranges, and nothing holds
//! it; the pod and service CIDRs overlap no MAAS subnet. The key is
//! checked first (nothing else can be asked without it); every other
//! problem is reported together, so one run names them all.

use std::net::IpAddr;

use anyhow::{Result, bail};

use crate::config::values::Cidr;
use crate::maas::api::Api;
use crate::maas::api::images::Image;
use crate::maas::api::machines::{Constraints, status};

/// What the cluster needs of MAAS.
pub struct Needs<'a> {
    pub image: &'a str,
    pub constraints: &'a Constraints,
    /// Machines still to allocate (a rerun has some already).
    pub machines: usize,
    pub vip: IpAddr,
    /// The VIP is reserved by this cluster already (a rerun).
    pub vip_ours: bool,
    pub pod_cidr: Cidr,
    pub service_cidr: Cidr,
}

pub async fn check(api: &Api, n: &Needs<'_>) -> Result<()> {
    let user = api.whoami().await?;
    tracing::info!(user, maas = api.region(), "the MAAS API key works");
    let mut problems = Vec::new();
    for found in [image(api, n.image).await, machines(api, n).await, network(api, n).await] {
        match found {
            Ok(mut p) => problems.append(&mut p),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!("the MAAS side is not ready; nothing was changed:\n  - {}", problems.join("\n  - "))
}

async fn image(api: &Api, name: &str) -> Result<Vec<String>> {
    Ok(match api.image(name).await? {
        Image::Complete { .. } => vec![],
        Image::Incomplete { id } => vec![format!(
            "--image {name}: boot resource {id} is not complete in MAAS (an upload still running or cut short): \
             finish it with `node-image upload` and wait for it to sync"
        )],
        Image::Missing { uploaded } => vec![format!(
            "--image {name}: MAAS has no uploaded image of that name (uploaded: {}); upload it with `node-image \
             upload --name {name}`",
            if uploaded.is_empty() { "none".to_owned() } else { uploaded.join(", ") }
        )],
    })
}

async fn machines(api: &Api, n: &Needs<'_>) -> Result<Vec<String>> {
    if n.machines == 0 {
        return Ok(vec![]);
    }
    let all = api.machines(None).await?;
    let ready: Vec<_> = all.iter().filter(|m| m.status == status::READY).collect();
    let fit = ready.iter().filter(|m| n.constraints.misses(m).is_empty()).count();
    if fit >= n.machines {
        tracing::info!(ready = ready.len(), matching = fit, needed = n.machines, "enough Ready machines match");
        return Ok(vec![]);
    }
    let c = n.constraints;
    let mut why = format!(
        "{} Ready machine(s) match, {} needed (cpu_count >= {}, mem >= {} MiB, disk >= {} GiB{}{}{})",
        fit,
        n.machines,
        c.cpu_count,
        c.mem_mib,
        c.disk_gib,
        c.zone.as_ref().map(|z| format!(", zone {z}")).unwrap_or_default(),
        c.pool.as_ref().map(|p| format!(", pool {p}")).unwrap_or_default(),
        if c.tags.is_empty() { String::new() } else { format!(", tags {}", c.tags.join(",")) },
    );
    for m in ready.iter().filter(|m| !c.misses(m).is_empty()) {
        why.push_str(&format!("; {} ({}): {}", m.hostname, m.system_id, c.misses(m).join(", ")));
    }
    let busy = all.len() - ready.len();
    if busy > 0 {
        why.push_str(&format!("; {busy} other machine(s) are not Ready"));
    }
    Ok(vec![why])
}

async fn network(api: &Api, n: &Needs<'_>) -> Result<Vec<String>> {
    let subnets = api.subnets().await?;
    let mut problems = Vec::new();
    for (key, cidr) in [("kubernetes.pod_cidr", n.pod_cidr), ("kubernetes.service_cidr", n.service_cidr)] {
        for s in subnets.iter().filter(|s| s.net().is_some_and(|net| cidr.overlaps(&net))) {
            problems.push(format!(
                "{key} {cidr} overlaps MAAS subnet {} ({}): pods or services would shadow the machines' network; \
                 choose a CIDR outside every MAAS subnet",
                s.cidr, s.name
            ));
        }
    }
    let vip = n.vip;
    let Some(subnet) = subnets.iter().find(|s| s.net().is_some_and(|net| net.contains(&vip))) else {
        let known: Vec<&str> = subnets.iter().map(|s| s.cidr.as_str()).collect();
        problems.push(format!(
            "kubernetes.endpoint: the VIP {vip} is in no MAAS subnet ({}); kube-vip answers ARP for it on the \
             nodes' network, so it must be an address of a subnet MAAS manages",
            known.join(", ")
        ));
        return Ok(problems);
    };
    let ranges = api.ipranges().await?;
    if let Some(r) = ranges.iter().find(|r| r.subnet.id == subnet.id && r.contains(vip) && r.kind == "dynamic") {
        problems.push(format!(
            "kubernetes.endpoint: the VIP {vip} is inside the dynamic range {}-{} of subnet {}: MAAS's DHCP may \
             hand it out; choose an address outside it",
            r.start_ip, r.end_ip, subnet.cidr
        ));
    }
    if !n.vip_ours
        && let Some(used) = api.subnet_ips(subnet.id).await?.iter().find(|u| u.ip == vip)
    {
        problems.push(format!(
            "kubernetes.endpoint: the VIP {vip} is already allocated in MAAS (to {}); choose a free address of \
             subnet {}",
            used.holder, subnet.cidr
        ));
    }
    Ok(problems)
}
