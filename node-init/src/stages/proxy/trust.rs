//! The proxy CA in the system trust store: one anchor file per certificate
//! in the distro's anchor directory, the distro's update tool, then a check
//! that the system bundle really holds every certificate.
//!
//! Debian's `update-ca-certificates` is not safe to kill: it appends the
//! bundle to a fixed `ca-certificates.crt.new`, which the next run appends
//! to again (a bundle with every certificate twice, or a torn one in the
//! middle), and it rehashes and runs its hooks only for links it adds, so a
//! link made before the kill never gets its hash. A run that finds such an
//! interrupted update removes the leftover and rebuilds with `--fresh`.

use anyhow::{Result, bail};

use crate::distro::Family;
use crate::root::{Change, Root};
use crate::runner::Cmd;
use crate::stages::Context;

/// Anchors node-init may have written: `node-init-proxy-ca.crt`,
/// `node-init-proxy-ca-2.crt`, ... up to this many.
const MAX_ANCHORS: usize = 32;

/// The bundle `update-ca-certificates` builds before moving it into place;
/// only a run that was killed leaves it behind.
pub const DEBIAN_PARTIAL_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt.new";

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
    let partial = family == Family::Debian && cx.root.exists(DEBIAN_PARTIAL_BUNDLE);
    let incomplete = !missing_from_bundle(cx.root, family, certs)?.is_empty();
    if !changed && !incomplete && !partial {
        return Ok(paths);
    }
    // Anchors already in place that the bundle lacks: the update that
    // should have taken them in was cut off.
    let cmd =
        if partial || !changed { after_interrupted_update(cx, family, partial)? } else { family.update_command() };
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

/// The update command that repairs what a killed update left: on Debian,
/// without the partial bundle and rebuilding every link and hash.
fn after_interrupted_update(cx: &Context<'_>, family: Family, partial: bool) -> Result<Cmd> {
    let cmd = family.update_command();
    if family != Family::Debian {
        // update-ca-trust extracts everything afresh each time.
        return Ok(cmd);
    }
    if partial {
        tracing::warn!(
            path = DEBIAN_PARTIAL_BUNDLE,
            "an earlier update-ca-certificates was killed and left its partial bundle, which the next run would \
             append to; removing it"
        );
        cx.remove(DEBIAN_PARTIAL_BUNDLE)?;
    } else {
        tracing::warn!(
            "the proxy CA's anchors are in place but the system bundle lacks them: an earlier update was cut off"
        );
    }
    tracing::info!("rebuilding the trust store with `update-ca-certificates --fresh`");
    Ok(Cmd { argv: [cmd.argv, vec!["--fresh".to_owned()]].concat(), ..cmd })
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
