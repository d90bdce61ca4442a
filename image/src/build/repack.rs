//! The entries of the image, written one by one into a tar stream.
//!
//! [`repack`] streams the base (tar or gzip tar, detected by its magic),
//! copies each kept entry normalised ([`copy`]), drops what the new entries
//! replace and what a [`drop`](super::drop) rule keeps out, then appends the
//! new entries with their missing parent directories ([`append_new`]). On
//! the way it hashes the base, reports progress by the bytes read, checks a
//! baked node-init config and notes which of the tools node-init configures
//! the base carries ([`baked`](super::baked)).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::UsageError;

use super::New;
use super::baked::{self, CONFIG};
use super::drop::rule_for;

/// A baked config larger than this is refused rather than read whole.
const MAX_CONFIG: u64 = 1 << 20;

/// What happened to the base's entries, for the manifest.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    /// The removed paths by the name of the rule that removed them.
    pub removed_by: BTreeMap<&'static str, Vec<String>>,
    /// The tools node-init configures that the base carries.
    pub tools: BTreeSet<&'static str>,
}

/// Streams the base into `tar`, then appends the new entries sorted.
/// Without `epoch`, the newest mtime in the base is used: clamping the
/// base to it changes nothing, and the new entries, written last, get it.
/// Returns the base's sha256, the changes and the epoch used.
pub fn repack<W: Write>(
    base: &Path,
    tar: &mut tar::Builder<W>,
    new: &BTreeMap<String, New>,
    epoch: Option<u64>,
) -> Result<(String, Changes, u64)> {
    let clamp = epoch.unwrap_or(u64::MAX);
    let mut newest = 0;
    let file = File::open(base).with_context(|| format!("opening --base {}", base.display()))?;
    let total = file.metadata()?.len();
    let hash = Arc::new(Mutex::new(Sha256::new()));
    let progress = crate::progress::Progress::new(total, "repacking");
    let reader = HashingReader { inner: file, hash: hash.clone(), progress: progress.clone() };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let gzipped = reader.fill_buf().context("reading --base")?.starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> =
        if gzipped { Box::new(flate2::bufread::MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    let mut archive = tar::Archive::new(stream);
    let mut changes = Changes::default();
    let mut dirs = BTreeSet::new();
    let mut prefix = None;
    let bad = || format!("--base {} is not a readable tar archive", base.display());
    let mut count = 0u64;
    for entry in archive.entries().with_context(bad)? {
        let mut entry = entry.with_context(bad)?;
        count += 1;
        newest = newest.max(entry.header().mtime().unwrap_or(0));
        let raw = entry.path().with_context(bad)?.to_string_lossy().into_owned();
        let norm = raw.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/').to_owned();
        prefix.get_or_insert_with(|| if raw.starts_with("./") { "./" } else { "" });
        if norm.is_empty() || norm == "." {
            copy(tar, &mut entry, &raw, clamp, None)?;
            continue;
        }
        let kind = entry.header().entry_type();
        if let Some(rule) = rule_for(&norm) {
            changes.removed_by.entry(rule.name).or_default().push(norm.clone());
            changes.removed.push(norm);
            continue;
        }
        if kind.is_dir() {
            dirs.insert(norm.clone());
        }
        if new.contains_key(&norm) && !(kind.is_dir() && matches!(new[&norm], New::Dir(_))) {
            changes.replaced.push(norm);
            continue;
        }
        if kind.is_hard_link() {
            let target = entry.link_name().with_context(bad)?.map(|t| t.to_string_lossy().into_owned());
            let target = target.unwrap_or_default();
            let target = target.trim_start_matches("./").trim_start_matches('/');
            if let Some(rule) = rule_for(target) {
                bail!(
                    "--base {}: {norm} is a hard link to {target}, which the image leaves out ({}): \
                     make it a file of its own in the base",
                    base.display(),
                    rule.name
                );
            }
        }
        if !kind.is_dir() {
            changes.tools.extend(baked::tool_at(&norm));
        }
        if norm == CONFIG {
            let data = baked_config(&mut entry, base)?;
            copy(tar, &mut entry, &raw, clamp, Some(&data))?;
        } else {
            copy(tar, &mut entry, &raw, clamp, None)?;
        }
    }
    if count == 0 {
        bail!("{}: no entries", bad());
    }
    progress.done();
    let epoch = epoch.unwrap_or(newest);
    let prefix = prefix.unwrap_or("");
    for (path, item) in new {
        if matches!(item, New::Dir(_)) && dirs.contains(path) {
            continue;
        }
        for parent in Path::new(path).ancestors().skip(1) {
            let p = parent.to_string_lossy();
            if !p.is_empty() && !dirs.contains(p.as_ref()) && !new.contains_key(p.as_ref()) {
                append_new(tar, &format!("{prefix}{p}"), &New::Dir(0o755), epoch)?;
                dirs.insert(p.into_owned());
            }
        }
        append_new(tar, &format!("{prefix}{path}"), item, epoch)?;
        if !changes.replaced.contains(path) {
            changes.added.push(path.clone());
        }
    }
    let hex = hex::encode(hash.lock().expect("hash lock").clone().finalize());
    Ok((hex, changes, epoch))
}

/// The base's `etc/node-init/config.yaml`, read and checked to hold no
/// cluster secret. Only a regular file can be checked, so a link there is
/// refused too.
fn baked_config<R: Read>(entry: &mut tar::Entry<'_, R>, base: &Path) -> Result<Vec<u8>> {
    let origin = format!("--base {}: {CONFIG}", base.display());
    let kind = entry.header().entry_type();
    if kind.is_symlink() || kind.is_hard_link() {
        let why = "is a link; bake the file itself, so that build can check it holds no cluster secret";
        return Err(UsageError(format!("{origin} {why}")).into());
    }
    if entry.header().size().unwrap_or(0) > MAX_CONFIG {
        return Err(UsageError(format!("{origin} is larger than {MAX_CONFIG} bytes; it is no node-init config")).into());
    }
    let mut data = Vec::new();
    entry.read_to_end(&mut data).with_context(|| format!("reading {origin}"))?;
    baked::check_config(&data, &origin)?;
    Ok(data)
}

/// Copies one base entry: same type, mode, numeric owner, link, device and
/// xattrs; no user or group names; mtime clamped. `data`, when given, is
/// the entry's content, already read.
fn copy<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    entry: &mut tar::Entry<'_, R>,
    path: &str,
    epoch: u64,
    data: Option<&[u8]>,
) -> Result<()> {
    let mut h = entry.header().clone();
    let ctx = || format!("copying {path}");
    let pax: Vec<(String, Vec<u8>)> = match entry.pax_extensions().with_context(ctx)? {
        Some(exts) => exts
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.key().ok()?.to_owned(), e.value_bytes().to_vec())))
            .filter(|(k, _)| k.starts_with("SCHILY.") || k.starts_with("LIBARCHIVE.") || k.starts_with("RHT."))
            .collect(),
        None => Vec::new(),
    };
    if !pax.is_empty() {
        tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).with_context(ctx)?;
    }
    h.set_mtime(h.mtime().unwrap_or(0).min(epoch));
    let _ = h.set_username("");
    let _ = h.set_groupname("");
    if let Some(gnu) = h.as_gnu_mut() {
        gnu.set_atime(0);
        gnu.set_ctime(0);
    }
    let kind = h.entry_type();
    if kind.is_gnu_sparse() {
        let real = h.as_gnu().map_or(Ok(0), |g| g.real_size()).with_context(ctx)?;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(real);
    }
    if kind.is_hard_link() || kind.is_symlink() {
        let target = entry.link_name().with_context(ctx)?.map(|t| t.into_owned()).unwrap_or_default();
        h.set_size(0);
        return tar.append_link(&mut h, path, target).with_context(ctx);
    }
    match data {
        Some(data) => tar.append_data(&mut h, path, data).with_context(ctx),
        None => tar.append_data(&mut h, path, entry).with_context(ctx),
    }
}

fn append_new<W: Write>(tar: &mut tar::Builder<W>, path: &str, item: &New, epoch: u64) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch);
    let ctx = || format!("adding {path}");
    match item {
        New::Dir(mode) => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(*mode);
            h.set_size(0);
            tar.append_data(&mut h, format!("{path}/"), io::empty()).with_context(ctx)
        }
        New::File { mode, data } => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, path, data.as_slice()).with_context(ctx)
        }
        New::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, path, target).with_context(ctx)
        }
    }
}

struct HashingReader {
    inner: File,
    hash: Arc<Mutex<Sha256>>,
    progress: crate::progress::Progress,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.lock().expect("hash lock").update(&buf[..n]);
        self.progress.inc(n as u64);
        Ok(n)
    }
}
