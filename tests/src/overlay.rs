//! A node's root as an overlay over one prepared template, so each of many
//! runs starts from the same bytes in no time, and what a run changed is
//! exactly the overlay's upper directory: the comparison reads those paths
//! only, not the whole Debian root.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{output, text};

/// The template mounted read-only under a fresh upper directory; unmounted
/// when dropped.
pub struct Layered {
    dir: tempfile::TempDir,
}

impl Layered {
    pub fn new(template: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            template.display(),
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        );
        let out = output(
            Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(dir.path().join("merged")),
        );
        assert!(out.status.success(), "mounting the overlay: {}", text(&out.stderr));
        Self { dir }
    }

    /// The root node-init runs in.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("merged")
    }

    /// Every path a run created, changed or removed, relative to the root.
    pub fn touched(&self) -> BTreeSet<PathBuf> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
            for e in std::fs::read_dir(dir).expect("reading the upper dir").flatten() {
                let p = e.path();
                out.insert(p.strip_prefix(base).expect("below").to_owned());
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(base, &p, out);
                }
            }
        }
        let upper = self.dir.path().join("upper");
        let mut out = BTreeSet::new();
        walk(&upper, &upper, &mut out);
        out
    }
}

impl Drop for Layered {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path().join("merged")).status();
    }
}

/// One path as a comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Absent,
    Dir { mode: u32 },
    File { mode: u32, bytes: Vec<u8> },
    Link(PathBuf),
    Other { mode: u32 },
}

impl Entry {
    pub fn read(path: &Path) -> Self {
        let Ok(m) = std::fs::symlink_metadata(path) else { return Self::Absent };
        let mode = m.mode() & 0o7777;
        let t = m.file_type();
        if t.is_symlink() {
            Self::Link(std::fs::read_link(path).expect("readlink"))
        } else if t.is_dir() {
            Self::Dir { mode }
        } else if t.is_file() {
            Self::File { mode, bytes: std::fs::read(path).expect("reading a file") }
        } else {
            debug_assert!(t.is_fifo() || t.is_socket() || t.is_char_device() || t.is_block_device());
            Self::Other { mode }
        }
    }

    /// A short form for a failure message.
    pub fn show(&self) -> String {
        match self {
            Self::File { mode, bytes } => {
                let t = text(bytes);
                let t =
                    if t.chars().count() > 300 { format!("{}...", t.chars().take(300).collect::<String>()) } else { t };
                format!("file {mode:o} {:?}", t)
            }
            other => format!("{other:?}"),
        }
    }
}

/// The entries of `paths` under `root`.
pub fn entries(root: &Path, paths: &BTreeSet<PathBuf>) -> BTreeMap<PathBuf, Entry> {
    paths.iter().map(|p| (p.clone(), Entry::read(&root.join(p)))).collect()
}
