//! `Root`: the one way node-init reaches a host path.
//!
//! On a live node the root is `/`. With `--root DIR` every path is taken inside
//! DIR, and symbolic links are resolved *inside* it: an image whose
//! `/var/run` links to `/run` must send `/var/run/reboot-required` to
//! `DIR/run/reboot-required`, never to the host's `/run`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

/// How many symbolic links one lookup may follow, as the kernel's ELOOP bound.
const MAX_LINKS: usize = 40;

#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
}

/// What a write did, so callers can report and dry-run can print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Created,
    Updated,
    Removed,
}

impl Root {
    /// The running system.
    pub fn host() -> Self {
        Self { base: PathBuf::from("/") }
    }

    /// A mounted image or chroot directory.
    pub fn new(dir: &Path) -> Result<Self> {
        let base = fs::canonicalize(dir).with_context(|| format!("opening root {}", dir.display()))?;
        if !base.is_dir() {
            bail!("root {} is not a directory", dir.display());
        }
        Ok(Self { base })
    }

    pub fn is_host(&self) -> bool {
        self.base == Path::new("/")
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The host path for `abs` (an absolute path as seen inside the root),
    /// with every symbolic link resolved inside the root. Components that do
    /// not exist yet are appended as they are.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        if self.is_host() {
            return Path::new("/").join(abs);
        }
        self.resolve(abs).unwrap_or_else(|| self.base.join(strip_root(abs)))
    }

    fn resolve(&self, abs: &Path) -> Option<PathBuf> {
        let mut pending: Vec<PathBuf> = components(abs);
        pending.reverse();
        let mut inside = PathBuf::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part.as_os_str() == ".." {
                inside.pop();
                continue;
            }
            let candidate = inside.join(&part);
            match fs::read_link(self.base.join(&candidate)) {
                Ok(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    if target.is_absolute() {
                        inside = PathBuf::new();
                    }
                    let mut rest = components(&target);
                    rest.reverse();
                    pending.extend(rest);
                }
                Err(_) => inside = candidate,
            }
        }
        Some(self.base.join(inside))
    }

    pub fn exists(&self, abs: impl AsRef<Path>) -> bool {
        self.path(abs).exists()
    }

    /// The file's bytes, or `None` when it does not exist.
    pub fn read_opt(&self, abs: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let p = self.path(&abs);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    pub fn read_string_opt(&self, abs: impl AsRef<Path>) -> Result<Option<String>> {
        let p = self.path(&abs);
        self.read_opt(&abs)?
            .map(|b| String::from_utf8(b).with_context(|| format!("reading {}: not UTF-8", p.display())))
            .transpose()
    }

    /// Replaces `abs` with `content` atomically, unless it already holds
    /// exactly that. See [`write_atomic`].
    pub fn write(&self, abs: impl AsRef<Path>, content: &[u8], mode: u32) -> Result<Change> {
        write_atomic(&self.path(abs), content, mode)
    }

    /// Makes `abs` a symbolic link to `target` (a path as seen inside the
    /// root, such as `/dev/null` for a masked unit), atomically: a link
    /// beside it, renamed over it. The link itself is never followed, and a
    /// file that is not a link is left alone with an error.
    pub fn symlink(&self, abs: impl AsRef<Path>, target: &str) -> Result<Change> {
        let abs = abs.as_ref();
        let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) else {
            bail!("{} cannot be a link", abs.display());
        };
        let dir = self.path(dir);
        let link = dir.join(name);
        let existed = match fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if fs::read_link(&link).is_ok_and(|t| t == Path::new(target)) {
                    return Ok(Change::Unchanged);
                }
                true
            }
            Ok(_) => bail!("{} exists and is not a symbolic link", link.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e).with_context(|| format!("reading {}", link.display())),
        };
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = temp_path(&link);
        remove_stale(&tmp)?;
        std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("creating {}", tmp.display()))?;
        fs::rename(&tmp, &link).with_context(|| format!("renaming {} to {}", tmp.display(), link.display()))?;
        sync_parent(&link)?;
        Ok(if existed { Change::Updated } else { Change::Created })
    }

    /// Removes `abs` if it exists, syncing its directory.
    pub fn remove(&self, abs: impl AsRef<Path>) -> Result<Change> {
        let p = self.path(abs);
        match fs::remove_file(&p) {
            Ok(()) => {
                sync_parent(&p)?;
                Ok(Change::Removed)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Change::Unchanged),
            Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
}

fn strip_root(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_))).collect()
}

fn components(p: &Path) -> Vec<PathBuf> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(PathBuf::from(s)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

/// The temp file beside `path`. Its name is fixed, not random, so a run
/// killed mid-write leaves at most one, and the next write of the same file
/// reuses and removes it.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.node-init-tmp"))
}

/// Writes `content` to `path` so that a reader, or a crash at any instant,
/// sees either the old file or the new one: temp file in the same
/// directory, mode set, fsync, rename, fsync of the directory. A file that
/// already holds `content` with `mode` is left untouched.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<Change> {
    let tmp = temp_path(path);
    let existing = fs::read(path).ok();
    let same_mode = fs::metadata(path).map(|m| m.permissions().mode() & 0o7777 == mode).unwrap_or(false);
    if existing.as_deref() == Some(content) && same_mode {
        remove_stale(&tmp)?;
        return Ok(Change::Unchanged);
    }
    let dir = path.parent().context("a file path has a parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    // The mode given to open() is filtered by the umask; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(content))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_parent(path)?;
    Ok(if existing.is_some() { Change::Updated } else { Change::Created })
}

fn remove_stale(tmp: &Path) -> Result<()> {
    match fs::remove_file(tmp) {
        Ok(()) => sync_parent(tmp),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = path.parent().context("a file path has a parent directory")?;
    fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("run")).unwrap();
        fs::create_dir_all(t.path().join("var")).unwrap();
        symlink("/run", t.path().join("var/run")).unwrap();
        let root = Root::new(t.path()).unwrap();
        let p = root.path("/var/run/reboot-required");
        assert_eq!(p, root.base().join("run/reboot-required"));
    }

    #[test]
    fn dotdot_cannot_climb_out() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        assert_eq!(root.path("/../../etc/passwd"), root.base().join("etc/passwd"));
        fs::create_dir_all(t.path().join("a")).unwrap();
        symlink("../../../../etc", t.path().join("a/up")).unwrap();
        assert_eq!(root.path("/a/up/shadow"), root.base().join("etc/shadow"));
    }

    #[test]
    fn write_is_idempotent_and_sets_mode() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("d/f");
        assert_eq!(write_atomic(&p, b"x", 0o600).unwrap(), Change::Created);
        assert_eq!(write_atomic(&p, b"x", 0o600).unwrap(), Change::Unchanged);
        assert_eq!(write_atomic(&p, b"x", 0o644).unwrap(), Change::Updated);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        assert!(!temp_path(&p).exists());
    }

    #[test]
    fn a_link_is_made_once_and_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        let unit = "/etc/systemd/system/swap.img.swap";
        assert_eq!(root.symlink(unit, "/dev/null").unwrap(), Change::Created);
        assert_eq!(root.symlink(unit, "/dev/null").unwrap(), Change::Unchanged);
        assert_eq!(fs::read_link(t.path().join(&unit[1..])).unwrap(), Path::new("/dev/null"));
        root.write("/etc/systemd/system/mine.swap", b"[Swap]\n", 0o644).unwrap();
        let err = root.symlink("/etc/systemd/system/mine.swap", "/dev/null").unwrap_err().to_string();
        assert!(err.contains("is not a symbolic link"), "{err}");
    }

    #[test]
    fn stale_temp_from_a_killed_run_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        write_atomic(&p, b"x", 0o644).unwrap();
        fs::write(temp_path(&p), b"half").unwrap();
        assert_eq!(write_atomic(&p, b"x", 0o644).unwrap(), Change::Unchanged);
        assert!(!temp_path(&p).exists());
    }
}
