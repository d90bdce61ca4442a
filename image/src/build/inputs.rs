//! What `build` lays over the base: the node-init binary, checked to be a
//! static x86-64 executable, and the overlay tree read into entries.
//!
//! The overlay tree is read in sorted order with modes normalised (0644 or
//! 0755 by the exec bit, directories 0755 unless [`DIR_MODES`] says
//! otherwise), so the entries depend only on the files' content, not on the
//! checkout's umask or the directory order on disk.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::New;

/// Directories whose mode git cannot carry.
const DIR_MODES: [(&str, u32); 1] = [("etc/node-init", 0o700)];

/// The overlay tree as entries: files 0644 or 0755 by their exec bit,
/// directories 0755 (or as [`DIR_MODES`] says), symlinks as they are.
/// `.keep` placeholders are left out.
pub fn overlays(dir: &Path) -> Result<BTreeMap<String, New>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An x86-64 ELF header and one program header of type `kind`.
    fn elf(kind: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        (b[4], b[5]) = (2, 1);
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&kind.to_le_bytes());
        b
    }

    #[test]
    fn only_a_static_x86_64_elf_is_accepted() {
        check_static_x86_64(&elf(1)).expect("PT_LOAD only");
        let why = |b: &[u8]| check_static_x86_64(b).expect_err("accepted").to_string();
        assert!(why(&elf(3)).contains("is dynamically linked"));
        assert!(why(b"#!/bin/sh\n").contains("is not an ELF executable"));
        let mut arm = elf(1);
        arm[18] = 183;
        assert!(why(&arm).contains("is not an x86-64 ELF"));
        let mut cut = elf(1);
        cut.truncate(66);
        assert!(why(&cut).contains("truncated program header table"));
    }
}
