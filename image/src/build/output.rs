//! The files `build` writes, each complete or not at all.
//!
//! The image is written under a temporary name beside `--out` and renamed
//! only once whole and synced ([`Pending`]); on any error it is removed, so
//! a failed build leaves nothing behind. The sidecars (`.sha256`,
//! `.manifest.json`) are written the same way. [`HashingWriter`] hashes and
//! counts the compressed bytes as they go to disk.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The output, written under a temporary name in the same directory and
/// renamed only when complete; removed on any error.
pub struct Pending {
    tmp: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Pending {
    pub fn new(out: &Path) -> Result<Self> {
        let name = out.file_name().with_context(|| format!("--out {} names no file", out.display()))?;
        let tmp = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        Ok(Self { tmp, out: out.to_owned(), committed: false })
    }

    pub fn file(&self) -> Result<File> {
        File::create(&self.tmp).with_context(|| format!("creating {}", self.tmp.display()))
    }

    pub fn commit(mut self) -> Result<()> {
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

pub fn write_beside(out: &Path, ext: &str, content: &[u8]) -> Result<()> {
    let path = PathBuf::from(format!("{}.{ext}", out.display()));
    let tmp = PathBuf::from(format!("{}.{ext}.partial", out.display()));
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))
}

pub struct HashingWriter {
    pub inner: File,
    pub hash: Arc<Mutex<(Sha256, u64)>>,
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
