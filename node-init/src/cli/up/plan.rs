//! What the operator gave `up`, checked before MAAS is asked anything:
//! the flags, the key's shape, the cluster's config (each role's config
//! validated as the node will validate it, with the secrets it will get),
//! and, on a rerun, that the state is this cluster's. Any of it wrong is
//! exit 2 naming the flag, key or file, with nothing changed.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde_json::Value;

use super::record::Record;
use super::{Args, MINTING};
use crate::cli::UsageError;
use crate::cli::secrets::{self, Secrets};
use crate::config::{self, ConfigError, Role};
use crate::maas::api::Api;
use crate::maas::api::machines::Constraints;

/// What the operator gave, checked before anything is changed.
pub(super) struct Plan {
    pub api: Api,
    pub cluster: Value,
    pub origin: String,
    pub vip: IpAddr,
    pub constraints: Constraints,
    pub pod_cidr: config::values::Cidr,
    pub service_cidr: config::values::Cidr,
    pub secrets: Secrets,
    /// Secrets to write into DIR/secrets (minted now, not on disk yet).
    pub mint: bool,
    pub secrets_dir: PathBuf,
}

pub(super) fn plan(a: &Args, existing: Option<&Record>) -> Result<Plan> {
    let api = a.maas.api()?;
    if !a.image.starts_with("custom/") || a.image.len() == "custom/".len() || a.image.contains(char::is_whitespace) {
        return Err(UsageError(format!("--image {:?}: expected custom/NAME, as uploaded", a.image)).into());
    }
    let (origin, cluster) = config::read_yaml_file(&a.config)?;
    let bad = |key: &str, message: String| ConfigError { origin: origin.clone(), key: key.into(), message };
    if cluster.pointer("/kubernetes/endpoint").is_none() {
        return Err(bad("kubernetes.endpoint", "required: the API-server VIP:port `up` reserves in MAAS".into()).into());
    }
    if cluster.pointer("/kubernetes/role").is_some() {
        return Err(bad("kubernetes.role", "`up` gives each node its role; leave it out".into()).into());
    }
    let (secrets_dir, mint) = match &a.secrets {
        Some(d) => (d.clone(), false),
        None => {
            let d = a.state.join("secrets");
            let minted_before = existing.is_some_and(|r| r.secrets_minted);
            let minting = existing.is_some_and(|r| r.done(MINTING));
            if d.exists() && !minting {
                return Err(UsageError(format!(
                    "{} exists and this --state did not mint it: pass --secrets {} to use it, or move it away",
                    d.display(),
                    d.display()
                ))
                .into());
            }
            (d.clone(), !(minted_before && secrets::complete(&d)))
        }
    };
    let secrets = if mint { Secrets::generate()? } else { Secrets::read(&secrets_dir)? };
    // Every role's config, validated as the node will validate it.
    let mut parsed = None;
    for role in [Role::Init, Role::ControlPlane] {
        let doc = crate::cli::userdata::node_config(cluster.clone(), role, Some(&secrets), &origin)?;
        parsed = Some(config::from_value(doc, &origin)?);
    }
    let parsed = parsed.expect("two roles");
    let k = parsed.kubernetes.as_ref().expect("validated with a role");
    let vip = k.endpoint.ip().ok_or_else(|| {
        bad("kubernetes.endpoint", format!("{} names a host; `up` reserves the VIP, so give VIP:port", k.endpoint))
    })?;
    let r = parsed.resources;
    let constraints = Constraints {
        cpu_count: r.cpus,
        mem_mib: r.memory_mib,
        disk_gib: r.disk_gib,
        zone: a.zone.clone(),
        pool: a.pool.clone(),
        tags: a.tags.iter().filter(|t| !t.is_empty()).cloned().collect(),
    };
    Ok(Plan {
        api,
        cluster,
        origin,
        vip,
        constraints,
        pod_cidr: k.pod_cidr,
        service_cidr: k.service_cidr,
        secrets,
        mint: mint && a.secrets.is_none(),
        secrets_dir,
    })
}

/// A state from an earlier run must be this cluster's.
pub(super) fn same_cluster(a: &Args, rec: &Record, vip: IpAddr) -> Result<()> {
    let dir = a.state.display();
    if let Some(at) = &rec.down {
        bail!(UsageError(format!(
            "--state {dir}: `down` released this cluster at {at}; bring a new one up with a new --state DIR"
        )));
    }
    if rec.vip_state == super::record::Vip::Released || rec.machines.iter().any(|m| m.released_at.is_some()) {
        bail!(UsageError(format!(
            "--state {dir}: `down` has released part of this cluster; finish with `down`, then bring a new one up \
             with a new --state DIR"
        )));
    }
    let differs = [
        ("--maas", rec.maas.clone(), a.maas.maas.clone()),
        ("--nodes", rec.nodes.to_string(), a.nodes.to_string()),
        ("--image", rec.image.clone(), a.image.clone()),
        ("kubernetes.endpoint", rec.vip.clone(), vip.to_string()),
    ];
    for (what, was, now) in differs {
        if was != now {
            bail!(UsageError(format!(
                "--state {dir}: its cluster has {what} {was}, this run {now}; continue it with the same value, or \
                 use another --state for another cluster"
            )));
        }
    }
    Ok(())
}
