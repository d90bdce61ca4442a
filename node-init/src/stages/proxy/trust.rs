//! The proxy CA in the system trust store: one anchor file per certificate
//! in the distro's anchor directory, the distro's update tool, then a check
//! that the system bundle really holds every certificate.

use anyhow::{Result, bail};

use crate::distro::Family;
use crate::root::{Change, Root};
use crate::stages::Context;

/// Anchors node-init may have written: `node-init-proxy-ca.crt`,
/// `node-init-proxy-ca-2.crt`, ... up to this many.
const MAX_ANCHORS: usize = 32;

fn anchor_path(family: Family, i: usize) -> String {
    let suffix = if i == 0 { String::new() } else { format!("-{}", i + 1) };
    format!("{}/node-init-proxy-ca{suffix}.crt", family.anchor_dir())
}

/// Writes one anchor per certificate, runs the update tool when anything
/// changed or the bundle lacks a certificate, and checks the bundle.
/// Returns the anchor paths.
pub async fn install(cx: &Context<'_>, family: Family, certs: &[Vec<u8>]) -> Result<Vec<String>> {
    let mut changed = false;
    let mut paths = Vec::new();
    for (i, der) in certs.iter().enumerate() {
        let path = anchor_path(family, i);
        changed |= cx.write(&path, crate::pki::pem_encode(der).as_bytes(), 0o644)? != Change::Unchanged;
        paths.push(path);
    }
    for i in certs.len()..MAX_ANCHORS {
        changed |= cx.remove(&anchor_path(family, i))? != Change::Unchanged;
    }
    if !changed && missing_from_bundle(cx.root, family, certs)?.is_empty() {
        return Ok(paths);
    }
    let cmd = family.update_command();
    let Some(out) = cx.exec(&cmd).await? else { return Ok(paths) };
    let out = out.check(&cmd)?;
    let missing = missing_from_bundle(cx.root, family, certs)?;
    if let Some(i) = missing.first() {
        bail!(
            "the system bundle {} does not hold the proxy CA from {} after `{cmd}`: {}",
            family.bundle(),
            anchor_path(family, *i),
            crate::runner::tail(&format!("{}{}", out.stdout, out.stderr), 20)
        );
    }
    Ok(paths)
}

/// Removes every anchor node-init wrote and updates the store if any was
/// there. Returns the removed paths.
pub async fn remove(cx: &Context<'_>, family: Family) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for i in 0..MAX_ANCHORS {
        let path = anchor_path(family, i);
        if cx.remove(&path)? == Change::Removed {
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        let cmd = family.update_command();
        if let Some(out) = cx.exec(&cmd).await? {
            out.check(&cmd)?;
        }
    }
    Ok(removed)
}

/// Indexes of the certificates that the system bundle does not contain.
fn missing_from_bundle(root: &Root, family: Family, certs: &[Vec<u8>]) -> Result<Vec<usize>> {
    let bundle = root.read_opt(family.bundle())?.unwrap_or_default();
    let present: Vec<Vec<u8>> =
        x509_parser::pem::Pem::iter_from_buffer(&bundle).filter_map(|b| b.ok()).map(|b| b.contents).collect();
    Ok((0..certs.len()).filter(|i| !present.contains(&certs[*i])).collect())
}
