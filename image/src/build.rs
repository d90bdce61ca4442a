//! `node-image build`: a streaming repack of a root filesystem archive.
//!
//! The base is read entry by entry and never unpacked. Entries the overlays
//! or the binary replace are dropped and written again at the end, with the
//! new entries, in sorted order; per-machine identity is reset on the way.
//! Everything kept keeps its type, mode, numeric owner, link target, device
//! numbers and xattrs; user and group names are dropped and mtimes are
//! clamped to `SOURCE_DATE_EPOCH`, so the same inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use gzp::ZWriter;
use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};
use serde_json::json;
use sha2::{Digest, Sha256};

pub const BINARY_PATH: &str = "usr/local/sbin/node-init";

/// Directories whose mode git cannot carry.
const DIR_MODES: [(&str, u32); 1] = [("etc/node-init", 0o700)];

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

/// What an image gets besides the base's entries.
#[derive(Debug, Clone)]
enum New {
    Dir(u32),
    File { mode: u32, data: Vec<u8> },
    Symlink(PathBuf),
}

/// What happened to the base's entries, for the manifest.
#[derive(Debug, Default)]
struct Changes {
    added: Vec<String>,
    replaced: Vec<String>,
    removed: Vec<String>,
}

/// Per-machine identity, removed as packer-maas does. (`/etc/machine-id`
/// is replaced by an empty file instead, so systemd makes a new one.)
fn is_identity(path: &str) -> bool {
    path.starts_with("etc/ssh/ssh_host_")
        || path == "var/lib/cloud/instance"
        || path == "var/lib/cloud/instances"
        || path.starts_with("var/lib/cloud/instances/")
        || path == "var/lib/systemd/random-seed"
        || path == "var/lib/urandom/random-seed"
}

pub fn run(a: &Args) -> Result<()> {
    let binary = std::fs::read(&a.binary).with_context(|| format!("reading --binary {}", a.binary.display()))?;
    check_static_x86_64(&binary).with_context(|| format!("--binary {}", a.binary.display()))?;
    let mut new = overlays(&a.overlays)?;
    new.insert(BINARY_PATH.to_owned(), New::File { mode: 0o755, data: binary.clone() });
    new.insert("etc/machine-id".to_owned(), New::File { mode: 0o444, data: Vec::new() });
    let out = Pending::new(&a.out)?;
    let hasher = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let gz: ParCompress<Gzip, HashingWriter> = ParCompressBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .context("compression threads")?
        .from_writer(HashingWriter { inner: out.file()?, hash: hasher.clone() });
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let (base_hash, changes, epoch) = repack(&a.base, &mut tar, &new, a.source_date_epoch)?;
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
                New::File { data, .. } if p != BINARY_PATH && p != "etc/machine-id" => Some((p.clone(), json!(hex::encode(Sha256::digest(data))))),
                _ => None,
            }).collect::<serde_json::Map<_, _>>(),
        },
        "added": changes.added,
        "replaced": changes.replaced,
        "removed": changes.removed,
    });
    write_beside(&a.out, "manifest.json", (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes())?;
    eprintln!(
        "node-image: wrote {} ({size} bytes, sha256 {hash}): {} added, {} replaced, {} removed",
        a.out.display(),
        changes.added.len(),
        changes.replaced.len(),
        changes.removed.len()
    );
    Ok(())
}

/// Streams the base into `tar`, then appends the new entries sorted.
/// Without `epoch`, the newest mtime in the base is used: clamping the
/// base to it changes nothing, and the new entries, written last, get it.
/// Returns the base's sha256, the changes and the epoch used.
fn repack<W: Write>(
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
            copy(tar, &mut entry, &raw, clamp)?;
            continue;
        }
        if entry.header().entry_type().is_dir() {
            dirs.insert(norm.clone());
        }
        if new.contains_key(&norm) && !(entry.header().entry_type().is_dir() && matches!(new[&norm], New::Dir(_))) {
            changes.replaced.push(norm);
            continue;
        }
        if is_identity(&norm) {
            changes.removed.push(norm);
        } else {
            copy(tar, &mut entry, &raw, clamp)?;
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

/// Copies one base entry: same type, mode, numeric owner, link, device and
/// xattrs; no user or group names; mtime clamped.
fn copy<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    entry: &mut tar::Entry<'_, R>,
    path: &str,
    epoch: u64,
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
    tar.append_data(&mut h, path, entry).with_context(ctx)
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

/// The overlay tree as entries: files 0644 or 0755 by their exec bit,
/// directories 0755 (or as [`DIR_MODES`] says), symlinks as they are.
/// `.keep` placeholders are left out.
fn overlays(dir: &Path) -> Result<BTreeMap<String, New>> {
    let mut out = BTreeMap::new();
    let meta = std::fs::metadata(dir).with_context(|| format!("--overlays {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("--overlays {} is not a directory", dir.display());
    }
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn walk(top: &Path, dir: &Path, out: &mut BTreeMap<String, New>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(top).expect("under the top").to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            out.insert(rel, New::Symlink(std::fs::read_link(&path)?));
        } else if meta.is_dir() {
            let mode = DIR_MODES.iter().find(|(p, _)| *p == rel).map_or(0o755, |(_, m)| *m);
            out.insert(rel, New::Dir(mode));
            walk(top, &path, out)?;
        } else if e.file_name() != ".keep" {
            let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
            out.insert(rel, New::File { mode, data: std::fs::read(&path)? });
        }
    }
    Ok(())
}

/// A static x86-64 ELF: 64-bit, little-endian, machine 62, no interpreter.
pub fn check_static_x86_64(b: &[u8]) -> Result<()> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        bail!("is not an ELF executable");
    }
    if b[4] != 2 || b[5] != 1 || u16::from_le_bytes([b[18], b[19]]) != 62 {
        bail!("is not an x86-64 ELF (the image is amd64)");
    }
    let u64_at = |o: usize| b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")));
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes(s.try_into().expect("2 bytes")));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        bail!("has a truncated ELF header");
    };
    for i in 0..usize::from(phnum) {
        let off = usize::try_from(phoff).unwrap_or(usize::MAX).saturating_add(i * usize::from(phentsize));
        let Some(kind) = b.get(off..off + 4) else { bail!("has a truncated program header table") };
        if u32::from_le_bytes(kind.try_into().expect("4 bytes")) == 3 {
            bail!("is dynamically linked (it has a PT_INTERP); build it with `just static`");
        }
    }
    Ok(())
}

/// The output, written under a temporary name in the same directory and
/// renamed only when complete; removed on any error.
struct Pending {
    tmp: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Pending {
    fn new(out: &Path) -> Result<Self> {
        let name = out.file_name().with_context(|| format!("--out {} names no file", out.display()))?;
        let tmp = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        Ok(Self { tmp, out: out.to_owned(), committed: false })
    }

    fn file(&self) -> Result<File> {
        File::create(&self.tmp).with_context(|| format!("creating {}", self.tmp.display()))
    }

    fn commit(mut self) -> Result<()> {
        File::open(&self.tmp)?.sync_all()?;
        std::fs::rename(&self.tmp, &self.out).with_context(|| format!("renaming to {}", self.out.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn write_beside(out: &Path, ext: &str, content: &[u8]) -> Result<()> {
    let path = PathBuf::from(format!("{}.{ext}", out.display()));
    let tmp = PathBuf::from(format!("{}.{ext}.partial", out.display()));
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))
}

struct HashingWriter {
    inner: File,
    hash: Arc<Mutex<(Sha256, u64)>>,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut h = self.hash.lock().expect("hash lock");
        h.0.update(&buf[..n]);
        h.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
