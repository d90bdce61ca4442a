//! The `host` stage's live half, on a booted node only: what is loaded, set
//! and running now ([`observe`]), the commands that bring it in line
//! ([`live_steps`], pure), and the bounded wait for containerd's socket.
//!
//! containerd reads its config and its unit's environment (the proxy
//! stage's drop-in) only when it starts. It is restarted, after a
//! `daemon-reload` so systemd hands it the current drop-ins, when it is not
//! running, when this run changed its config, or when its config or any
//! drop-in is newer than its main process. Its start is taken from the
//! monotonic clock systemd keeps and carried into wall-clock time now, so a
//! clock step at first boot between containerd's start and the proxy
//! stage's write cannot make a new drop-in look old.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use tokio::time::Instant;

use super::render::{MODULES, SYSCTLS, active_swaps};
use crate::root::Root;
use crate::runner::Cmd;
use crate::stages::Context;

pub const UNIT: &str = "containerd.service";
pub const SOCKET: &str = "/run/containerd/containerd.sock";
pub const DROP_IN_DIR: &str = "/etc/systemd/system/containerd.service.d";

const SHOW_TIMEOUT: Duration = Duration::from_secs(30);
const MODPROBE_TIMEOUT: Duration = Duration::from_secs(60);
const SYSCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Moving swapped-out pages back into memory can take a while.
const SWAPOFF_TIMEOUT: Duration = Duration::from_secs(600);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
const RESTART_TIMEOUT: Duration = Duration::from_secs(180);
pub const SOCKET_WAIT: Duration = Duration::from_secs(60);
const SOCKET_POLL: Duration = Duration::from_millis(500);

/// containerd as systemd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerd {
    /// `active`, `inactive`, `failed`, `activating`...
    pub state: String,
    /// When its main process started, in wall-clock time now.
    pub started: Option<SystemTime>,
}

/// What differs from the wanted state right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub missing_modules: Vec<&'static str>,
    /// The sysctl file changed, or a live value differs from it.
    pub sysctl_stale: bool,
    /// Active swap, from `/proc/swaps`.
    pub swaps: Vec<String>,
    /// Why containerd must restart, if it must.
    pub restart: Option<String>,
}

/// The commands that bring the running system in line, in order: modules
/// before the sysctls (the bridge keys exist only once `br_netfilter` is
/// loaded), containerd last.
pub fn live_steps(o: &Observed, sysctl_file: &str) -> Vec<Cmd> {
    let mut steps: Vec<Cmd> = o.missing_modules.iter().map(|m| Cmd::new(["modprobe", m], MODPROBE_TIMEOUT)).collect();
    if o.sysctl_stale {
        steps.push(Cmd::new(["sysctl", "-p", sysctl_file], SYSCTL_TIMEOUT));
    }
    if !o.swaps.is_empty() {
        steps.push(Cmd::new(["swapoff", "-a"], SWAPOFF_TIMEOUT));
    }
    if o.restart.is_some() {
        steps.push(Cmd::new(["systemctl", "daemon-reload"], RELOAD_TIMEOUT));
        steps.push(Cmd::new(["systemctl", "restart", UNIT], RESTART_TIMEOUT));
    }
    steps
}

/// Why containerd must restart: not running, its config changed in this
/// run, or a file it reads only at start is newer than its process.
pub fn restart_reason(c: &Containerd, config_changed: bool, files: &[(String, SystemTime)]) -> Option<String> {
    if c.state != "active" {
        return Some(format!("containerd is {}", c.state));
    }
    if config_changed {
        return Some("its config changed".into());
    }
    let Some(started) = c.started else { return Some("its start time is unknown".into()) };
    files.iter().find(|(_, mtime)| *mtime > started).map(|(path, _)| format!("{path} changed after it started"))
}

/// containerd's unit, asked of systemd; a node without it cannot run
/// kubeadm, so that is an error naming what the image must carry.
pub async fn containerd(cx: &Context<'_>) -> Result<Containerd> {
    let props = "--property=LoadState,ActiveState,ExecMainStartTimestampMonotonic";
    let cmd = Cmd::new(["systemctl", "show", UNIT, props], SHOW_TIMEOUT);
    let out = cx.runner.run(&cmd).await.and_then(|o| o.check(&cmd)).context("asking systemd about containerd")?;
    let value = |key: &str| out.stdout.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::trim);
    if value("LoadState").is_none_or(|s| s != "loaded") {
        bail!(
            "containerd is not installed ({UNIT}: LoadState={}): the image must carry containerd, \
             kubeadm, kubelet and kubectl",
            value("LoadState").unwrap_or("unknown")
        );
    }
    let started = value("ExecMainStartTimestampMonotonic").and_then(|v| v.parse().ok()).and_then(wall_clock_of);
    Ok(Containerd { state: value("ActiveState").unwrap_or("unknown").to_owned(), started })
}

/// A time on the monotonic clock (µs, as systemd records it) in wall-clock
/// time now; `None` for 0, systemd's "never".
fn wall_clock_of(monotonic_us: u64) -> Option<SystemTime> {
    let wall = SystemTime::now();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let now_us = u64::try_from(now.tv_sec()).ok()? * 1_000_000 + u64::try_from(now.tv_nsec()).ok()? / 1000;
    (monotonic_us > 0).then(|| wall.checked_sub(Duration::from_micros(now_us.saturating_sub(monotonic_us))))?
}

/// Reads what the live steps depend on. `sysctl_changed` and
/// `config_changed` say what this run wrote.
pub fn observe(
    cx: &Context<'_>,
    containerd: &Containerd,
    swaps: Vec<String>,
    sysctl_changed: bool,
    config_changed: bool,
) -> Result<Observed> {
    let missing_modules = MODULES.into_iter().filter(|m| !cx.root.exists(format!("/sys/module/{m}"))).collect();
    let mut sysctl_stale = sysctl_changed;
    for (key, want) in SYSCTLS {
        let now = cx.root.read_string_opt(format!("/proc/sys/{}", key.replace('.', "/")))?;
        sysctl_stale |= now.as_deref().map(str::trim) != Some(want);
    }
    let files = start_time_files(cx.root)?;
    let restart = restart_reason(containerd, config_changed, &files);
    Ok(Observed { missing_modules, sysctl_stale, swaps, restart })
}

/// The swap `/proc/swaps` lists as active.
pub fn swaps_now(root: &Root) -> Result<Vec<String>> {
    Ok(root.read_string_opt("/proc/swaps")?.map(|t| active_swaps(&t)).unwrap_or_default())
}

/// containerd's config and its `.conf` drop-ins, with their times.
fn start_time_files(root: &Root) -> Result<Vec<(String, SystemTime)>> {
    let mut paths = vec![super::CONTAINERD_CONFIG.to_owned()];
    let dir = root.path(DROP_IN_DIR);
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let name = e.with_context(|| format!("reading {}", dir.display()))?.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".conf") && !name.starts_with('.') {
                    paths.push(format!("{DROP_IN_DIR}/{name}"));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        if let Ok(m) = std::fs::metadata(root.path(&p)) {
            out.push((p, m.modified().context("reading file times")?));
        }
    }
    Ok(out)
}

/// Runs the steps; after a restart, waits until containerd answers on its
/// socket. Returns why containerd was restarted, if it was.
pub async fn apply(cx: &Context<'_>, o: &Observed) -> Result<Option<String>> {
    for cmd in live_steps(o, super::SYSCTL) {
        if let Some(out) = cx.exec(&cmd).await? {
            let hint = if cmd.argv.iter().any(|a| a == "restart") { " (see `journalctl -u containerd`)" } else { "" };
            out.check(&cmd).with_context(|| format!("bringing the running system in line{hint}"))?;
        }
    }
    let Some(why) = &o.restart else { return Ok(None) };
    if !cx.dry_run {
        wait_for_socket(cx.root, SOCKET_WAIT).await?;
        tracing::info!(reason = %why, "restarted containerd");
    }
    Ok(Some(why.clone()))
}

/// Polls containerd's socket until a connection succeeds, within `limit`.
pub async fn wait_for_socket(root: &Root, limit: Duration) -> Result<()> {
    let path = root.path(SOCKET);
    let deadline = Instant::now() + limit;
    loop {
        let last = match tokio::time::timeout(SOCKET_POLL, tokio::net::UnixStream::connect(&path)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        if Instant::now() + SOCKET_POLL > deadline {
            bail!(
                "containerd did not accept a connection on {SOCKET} within {} of its restart ({last}); \
                 see `journalctl -u containerd`",
                humantime::format_duration(limit)
            );
        }
        tokio::time::sleep(SOCKET_POLL).await;
    }
}
