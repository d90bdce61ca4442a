//! The real Debian roots: bookworm tarballs made by mmdebstrap
//! (`scripts/rootfs minbase|vm`, built once per machine and cached under
//! `target/rootfs/`), a fresh copy of one per test, and commands run inside
//! a root with `chroot` so the root's own tools (dpkg, apt, curl,
//! systemd-analyze) do the work.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{output, text, workspace};

/// A cached root tarball (`scripts/rootfs KIND`: built by mmdebstrap on
/// first use, under a lock so parallel tests build it once).
pub fn cached_rootfs(kind: &str) -> PathBuf {
    let out = output(Command::new(workspace().join("scripts/rootfs")).arg(kind));
    assert!(out.status.success(), "scripts/rootfs {kind}: {}", text(&out.stderr));
    PathBuf::from(text(&out.stdout).trim())
}

/// A fresh copy of the cached minbase root.
pub fn extracted() -> tempfile::TempDir {
    let tar = cached_rootfs("minbase");
    let dir = tempfile::tempdir().unwrap();
    let out = output(Command::new("tar").arg("-xpf").arg(&tar).arg("-C").arg(dir.path()));
    assert!(out.status.success(), "tar: {}", text(&out.stderr));
    dir
}

/// `chroot ROOT ARGS` with a clean environment and the tests' PATH, not
/// yet run: pass it to `run` when it must succeed, to `output` when the
/// test reads its exit.
pub fn chroot(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root).args(args).env_clear().env("PATH", crate::PATH);
    c
}
