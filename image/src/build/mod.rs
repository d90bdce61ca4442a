//! `node-image build`: a streaming repack of a root filesystem archive.
//!
//! The base is read entry by entry and never unpacked. Entries the overlays
//! or the binary replace are dropped and written again at the end, with the
//! new entries, in sorted order; per-machine identity is reset on the way.
//! Everything kept keeps its type, mode, numeric owner, link target, device
//! numbers and xattrs; user and group names are dropped and mtimes are
//! clamped to `SOURCE_DATE_EPOCH`, so the same inputs give the same bytes.
//! What a run on the base left behind (node-init's state, cloud-init's
//! records, config drop-ins) never rides along, and a baked config holding a
//! cluster secret stops the build as bad usage (exit 2).
//!
//! This file gathers the inputs, runs the repack into a gzip stream and
//! writes the image, its `.sha256` and its manifest. `inputs` reads the
//! binary and the overlays, `identity` says what is unique per machine,
//! `drop` what the image never carries and why, `baked` checks the config
//! and the tools, `repack` writes the entries, `output` puts the files in
//! place only when they are whole.

mod baked;
mod drop;
mod identity;
mod inputs;
mod output;
mod repack;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use gzp::ZWriter;
use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};
use serde_json::json;
use sha2::{Digest, Sha256};

use self::output::{HashingWriter, Pending, write_beside};

pub const BINARY_PATH: &str = "usr/local/sbin/node-init";

#[derive(Debug, clap::Args)]
/// Repack a root filesystem archive into a MAAS custom image with
/// node-init and the overlays baked in.
pub struct Args {
    /// The base root filesystem: a tar, optionally gzipped.
    #[arg(long, value_name = "ROOTFS.tar[.gz]")]
    pub base: PathBuf,
    /// The static node-init binary.
    #[arg(long, value_name = "PATH")]
    pub binary: PathBuf,
    /// The overlay tree (files placed at the same paths in the image).
    #[arg(long, value_name = "DIR")]
    pub overlays: PathBuf,
    /// The image to write (a gzip tar); IMAGE.sha256 and
    /// IMAGE.manifest.json are written beside it.
    #[arg(long, value_name = "IMAGE.tgz")]
    pub out: PathBuf,
    /// Clamp every mtime to this (seconds since 1970). Default: the newest
    /// mtime in the base.
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
}

/// Refuses overlays that put back what the image never carries, and checks
/// a config they bake.
fn check_overlays(new: &std::collections::BTreeMap<String, New>, dir: &std::path::Path) -> Result<()> {
    for (path, item) in new {
        if let Some(rule) = drop::rule_for(path) {
            let why = format!(
                "--overlays {}: {path} is left out of every image ({}): {}",
                dir.display(),
                rule.name,
                rule.why
            );
            return Err(crate::UsageError(why).into());
        }
        if path == baked::CONFIG {
            let origin = format!("--overlays {}: {path}", dir.display());
            match item {
                New::File { data, .. } => baked::check_config(data, &origin)?,
                _ => return Err(crate::UsageError(format!("{origin} is not a file")).into()),
            }
        }
    }
    Ok(())
}

/// What an image gets besides the base's entries.
#[derive(Debug, Clone)]
pub enum New {
    Dir(u32),
    File { mode: u32, data: Vec<u8> },
    Symlink(PathBuf),
}

pub fn run(a: &Args) -> Result<()> {
    let binary = std::fs::read(&a.binary).with_context(|| format!("reading --binary {}", a.binary.display()))?;
    inputs::check_static_x86_64(&binary).with_context(|| format!("--binary {}", a.binary.display()))?;
    let mut new = inputs::overlays(&a.overlays)?;
    check_overlays(&new, &a.overlays)?;
    new.insert(BINARY_PATH.to_owned(), New::File { mode: 0o755, data: binary.clone() });
    identity::reset(&mut new);
    let out = Pending::new(&a.out)?;
    let hasher = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let gz: ParCompress<Gzip, HashingWriter> = ParCompressBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .context("compression threads")?
        .from_writer(HashingWriter { inner: out.file()?, hash: hasher.clone() });
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let (base_hash, mut changes, epoch) = repack::repack(&a.base, &mut tar, &new, a.source_date_epoch)?;
    changes.tools.extend(new.iter().filter(|(_, n)| !matches!(n, New::Dir(_))).filter_map(|(p, _)| baked::tool_at(p)));
    let missing: Vec<&str> = baked::TOOLS.into_iter().filter(|t| !changes.tools.contains(t)).collect();
    let mut gz = tar.into_inner().context("finishing the tar stream")?;
    gz.finish().map_err(|e| anyhow::anyhow!("finishing the gzip stream: {e}"))?;
    let (hash, size) = {
        let h = hasher.lock().expect("hash lock");
        (hex::encode(h.0.clone().finalize()), h.1)
    };
    out.commit()?;
    let name = a.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    write_beside(&a.out, "sha256", format!("{hash}  {name}\n").as_bytes())?;
    let manifest = json!({
        "image": {"file": name, "sha256": hash, "size": size},
        "source_date_epoch": epoch,
        "inputs": {
            "base": {"file": a.base.display().to_string(), "sha256": base_hash},
            "binary": {"file": a.binary.display().to_string(), "sha256": hex::encode(Sha256::digest(&binary))},
            "overlays": new.iter().filter_map(|(p, n)| match n {
                New::File { data, .. } if p != BINARY_PATH && p != identity::MACHINE_ID => Some((p.clone(), json!(hex::encode(Sha256::digest(data))))),
                _ => None,
            }).collect::<serde_json::Map<_, _>>(),
        },
        "added": changes.added,
        "replaced": changes.replaced,
        "removed": changes.removed,
        "removed_why": drop::RULES.iter().filter_map(|r| {
            let paths = changes.removed_by.get(r.name)?;
            Some(json!({"rule": r.name, "why": r.why, "paths": paths}))
        }).collect::<Vec<_>>(),
        "missing_tools": missing,
    });
    write_beside(&a.out, "manifest.json", (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes())?;
    if !missing.is_empty() {
        eprintln!(
            "node-image: warning: the image has no {} (looked in /usr/bin and /usr/local/bin): node-init configures \
             them but never installs them, so install them in the base",
            missing.join(", ")
        );
    }
    for (rule, paths) in &changes.removed_by {
        eprintln!("node-image: left out {} path(s) of {rule}, e.g. /{}", paths.len(), paths[0]);
    }
    eprintln!(
        "node-image: wrote {} ({size} bytes, sha256 {hash}): {} added, {} replaced, {} removed",
        a.out.display(),
        changes.added.len(),
        changes.replaced.len(),
        changes.removed.len()
    );
    Ok(())
}
