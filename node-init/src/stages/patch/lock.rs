//! Waiting for the package manager's locks.
//!
//! On first boot unattended-upgrades (or packagekit, or dnf-makecache) often
//! holds the lock; cloud-init gives up after 30 s. This waits up to a bound,
//! logs the holder every 30 s, and past the bound fails with the holder's pid
//! and command line. apt's locks are fcntl locks, asked with `F_GETLK` (the
//! kernel names the holder); dnf's are pid files naming a live process.

use std::fmt;
use std::fs::File;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use tokio::time::Instant;

use crate::distro::Family;
use crate::root::Root;

#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// A file another process holds an fcntl write lock on.
    Fcntl(&'static str),
    /// A file holding the pid of the owner while it runs.
    PidFile(&'static str),
}

pub fn probes(family: Family) -> &'static [Probe] {
    match family {
        Family::Debian => &[
            Probe::Fcntl("/var/lib/dpkg/lock-frontend"),
            Probe::Fcntl("/var/lib/dpkg/lock"),
            Probe::Fcntl("/var/lib/apt/lists/lock"),
            Probe::Fcntl("/var/cache/apt/archives/lock"),
        ],
        Family::Rhel => &[
            Probe::PidFile("/var/lib/dnf/rpmdb_lock.pid"),
            Probe::PidFile("/var/cache/dnf/metadata_lock.pid"),
            Probe::PidFile("/var/cache/dnf/download_lock.pid"),
        ],
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub path: &'static str,
    pub pid: i32,
    pub cmdline: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is held by pid {} ({})", self.path, self.pid, self.cmdline)
    }
}

/// Who holds the lock `probe` names now, if anyone.
pub fn holder(root: &Root, probe: Probe) -> Result<Option<Holder>> {
    let (path, pid) = match probe {
        Probe::Fcntl(path) => (path, fcntl_holder(root, path)?),
        Probe::PidFile(path) => (path, pid_file_holder(root, path)?),
    };
    Ok(pid.map(|pid| Holder { path, pid, cmdline: cmdline(pid) }))
}

fn fcntl_holder(root: &Root, path: &str) -> Result<Option<i32>> {
    let file = match File::open(root.path(path)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {path}")),
    };
    let mut query = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&file, FcntlArg::F_GETLK(&mut query)).with_context(|| format!("asking who locks {path}"))?;
    // An open file description lock reports pid -1: held, owner unknown.
    Ok((query.l_type != libc::F_UNLCK as libc::c_short).then_some(query.l_pid))
}

fn pid_file_holder(root: &Root, path: &str) -> Result<Option<i32>> {
    let Some(text) = root.read_string_opt(path)? else { return Ok(None) };
    let Ok(pid) = text.trim().parse::<i32>() else { return Ok(None) };
    let alive = pid > 0 && pid != std::process::id() as i32 && std::path::Path::new(&format!("/proc/{pid}")).exists();
    Ok(alive.then_some(pid))
}

/// The holder's command line, from the kernel's view of processes (the
/// host's `/proc`, also under `--root`: the pid is in our namespace).
fn cmdline(pid: i32) -> String {
    if pid <= 0 {
        return "owner unknown".into();
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> =
        raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if args.is_empty() { "command line unknown".into() } else { args.join(" ") }
}

/// The first lock in `probes` someone holds.
fn first_held(root: &Root, probes: &[Probe]) -> Result<Option<Holder>> {
    for p in probes {
        if let Some(h) = holder(root, *p)? {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

const POLL: Duration = Duration::from_millis(250);
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Waits until no lock in `probes` is held, for at most `bound`; returns how
/// long it waited. Past the bound, fails naming the holder.
pub async fn wait_free(root: &Root, probes: &[Probe], bound: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut logged: Option<Instant> = None;
    loop {
        let Some(h) = first_held(root, probes)? else { return Ok(start.elapsed()) };
        let waited = start.elapsed();
        if waited >= bound {
            bail!(
                "{h}, still after {}; stop it or raise os.lock_timeout",
                humantime::format_duration(Duration::from_secs(bound.as_secs().max(1)))
            );
        }
        if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(lock = h.path, pid = h.pid, cmdline = %h.cmdline, waited_s = waited.as_secs(), "waiting for the package lock");
            logged = Some(Instant::now());
        }
        tokio::time::sleep(POLL.min(bound - waited)).await;
    }
}
