//! Stage `patch`: refresh and upgrade every package non-interactively, then
//! decide on a reboot (DESIGN.md §pipeline step 2).
//!
//! apt: `apt-get update` (retried with backoff and jitter within a
//! deadline: mirrors fail transiently when a fleet boots at once), then
//! `apt-get dist-upgrade` keeping old config files. A dpkg interrupted
//! mid-upgrade (a power cut, a killed run: its journal left in
//! `/var/lib/dpkg/updates`, or apt saying so) is repaired once with
//! `dpkg --configure -a`, after the same bounded lock wait and with the same
//! environment as the upgrade. dnf: `dnf -y upgrade --refresh`,
//! retried the same way. Both first wait, boundedly, for the package lock.
//! The proxy stage has already put the proxy in apt's and dnf's own config.
//! The reboot itself, its record and the loop guard belong to the pipeline.

mod lock;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use tokio::time::Instant;

use crate::config::{Config, RebootPolicy};
use crate::distro::{self, Family};
use crate::retry::Backoff;
use crate::runner::{Cmd, Output, tail};
use crate::stages::{Context, Details, Done, Fingerprint, Outcome, Stage};

pub use lock::{Holder, Probe, holder, probes, wait_free};

pub const REBOOT_REQUIRED: &str = "/var/run/reboot-required";
/// dpkg's journal: entries it has not yet folded into its status file,
/// left there only when dpkg was stopped mid-operation.
pub const DPKG_UPDATES: &str = "/var/lib/dpkg/updates";
const REBOOT_REQUIRED_PKGS: &str = "/var/run/reboot-required.pkgs";

/// Refreshing the package lists: five tries within ten minutes.
const REFRESH: Backoff = Backoff { first: Duration::from_secs(5), max: Duration::from_secs(60), attempts: 5 };
const REFRESH_DEADLINE: Duration = Duration::from_secs(600);
const REFRESH_TIMEOUT: Duration = Duration::from_secs(300);
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(3600);
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

const APT_ENV: [(&str, &str); 4] = [
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("APT_LISTCHANGES_FRONTEND", "none"),
    ("NEEDRESTART_MODE", "a"),
    ("UCF_FORCE_CONFFOLD", "1"),
];
const KEEP_OLD_CONFIG: [&str; 4] = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"];

pub struct PatchStage;

#[async_trait]
impl Stage for PatchStage {
    fn name(&self) -> &'static str {
        "patch"
    }

    fn inputs(&self, c: &Config, f: &mut Fingerprint) {
        f.add("patch", c.os.patch).add("reboot", c.os.reboot.as_str());
    }

    /// apt and dpkg need nothing of the later stages' work ahead (pulls
    /// through containerd, DNS questions, discovery), nor it of them.
    fn overlaps(&self) -> bool {
        true
    }

    async fn run(&self, cx: &Context<'_>) -> Result<Outcome> {
        let os = &cx.config.os;
        if !os.patch {
            return Ok(Outcome::Skipped("os.patch is false".into()));
        }
        let family = distro::family(cx.root)?;
        let mut details = Details::new();
        if !cx.dry_run {
            let waited = wait_free(cx.root, probes(family), os.lock_timeout.0).await?;
            details.insert("lock_wait_ms".into(), u64::try_from(waited.as_millis()).unwrap_or(u64::MAX).into());
        }
        let upgraded = match family {
            Family::Debian => apt_upgrade(cx, os.lock_timeout.0).await?,
            Family::Rhel => dnf_upgrade(cx).await?,
        };
        let required = reboot_required(cx, family).await?;
        details.insert("packages_upgraded".into(), upgraded.into());
        details.insert("reboot_required".into(), required.is_some().into());
        let count = match upgraded {
            None => "packages upgraded".to_owned(),
            Some(1) => "1 package upgraded".to_owned(),
            Some(n) => format!("{n} packages upgraded"),
        };
        let reason = match (os.reboot, required.clone()) {
            (RebootPolicy::Never, Some(why)) => {
                tracing::warn!(%why, "a reboot is required but os.reboot is never");
                None
            }
            (RebootPolicy::Never, None) | (RebootPolicy::IfRequired, None) => None,
            (RebootPolicy::IfRequired, Some(why)) => Some(why),
            (RebootPolicy::Always, _) => Some("os.reboot is always".to_owned()),
        };
        let summary = match &reason {
            Some(r) => format!("{count}; reboot: {r}"),
            None if required.is_some() => format!("{count}; reboot required but os.reboot is never"),
            None => format!("{count}; no reboot"),
        };
        let done = Done::new(details).summary(summary);
        Ok(match reason {
            Some(reason) => Outcome::RebootRequired { reason, done },
            None => Outcome::Done(done),
        })
    }
}

/// `cmd` with the environment that keeps apt, dpkg and ucf from asking.
fn noninteractive(cmd: Cmd) -> Cmd {
    APT_ENV.iter().fold(cmd, |c, (k, v)| c.env(k, v))
}

fn apt(args: &[&str], timeout: Duration) -> Cmd {
    let mut argv = vec!["apt-get", "-q"];
    argv.extend_from_slice(args);
    noninteractive(Cmd::new(argv, timeout))
}

/// Runs `cmd` until it succeeds, at most `REFRESH.attempts` times within
/// `REFRESH_DEADLINE`; a missed deadline of one try counts as a failure.
/// `None` in a dry run.
async fn retried(cx: &Context<'_>, cmd: &Cmd, incomplete: fn(&Output) -> Option<String>) -> Result<Option<Output>> {
    let deadline = Instant::now() + REFRESH_DEADLINE;
    let mut attempt = 1;
    loop {
        let last = match cx.exec(cmd).await {
            Ok(None) => return Ok(None),
            Ok(Some(out)) if out.success() => match incomplete(&out) {
                None => return Ok(Some(out)),
                Some(why) => anyhow::anyhow!("`{cmd}`: {why}"),
            },
            Ok(Some(out)) => out.check(cmd).unwrap_err(),
            Err(e) => e,
        };
        tracing::warn!(attempt, error = %format!("{last:#}"), "failed");
        if !REFRESH.wait(attempt, deadline).await {
            return Err(last.context(format!("gave up after {attempt} attempts")));
        }
        attempt += 1;
    }
}

/// `apt-get update` exits 0 when a source could not be fetched (a proxy
/// that refuses, a mirror that is down): the lists are then stale or empty
/// and the upgrade would quietly find nothing to do.
fn unfetched(out: &Output) -> Option<String> {
    let failed: Vec<&str> = out
        .stdout
        .lines()
        .chain(out.stderr.lines())
        .map(str::trim)
        .filter(|l| l.starts_with("W: Failed to fetch") || l.starts_with("E: Failed to fetch"))
        .collect();
    (!failed.is_empty()).then(|| format!("not every source could be fetched: {}", failed.join("; ")))
}

async fn apt_upgrade(cx: &Context<'_>, lock_timeout: Duration) -> Result<Option<u64>> {
    let mut repaired = false;
    if let Some(why) = dpkg_journal(cx)? {
        repair_dpkg(cx, lock_timeout, &why).await?;
        repaired = true;
    }
    // apt waits for the frontend lock itself too, in case another process
    // took it between our check and apt's start.
    let lock_opt = format!("DPkg::Lock::Timeout={}", lock_timeout.as_secs().max(1));
    retried(cx, &apt(&["-o", &lock_opt, "update"], REFRESH_TIMEOUT), unfetched)
        .await
        .context("refreshing the package lists")?;
    let mut args = vec!["-y", "-o", &lock_opt];
    args.extend_from_slice(&KEEP_OLD_CONFIG);
    args.push("dist-upgrade");
    let upgrade = apt(&args, UPGRADE_TIMEOUT);
    let Some(mut out) = cx.exec(&upgrade).await? else { return Ok(None) };
    if !out.success() && !repaired && out.stderr.contains("dpkg --configure -a") {
        repair_dpkg(cx, lock_timeout, &format!("`{upgrade}` says so: {}", tail(&out.stderr, 1))).await?;
        out = cx.exec(&upgrade).await?.context("rerunning the upgrade")?;
    }
    let out = out.check(&upgrade).context("upgrading packages")?;
    Ok(Some(apt_count(&out.stdout)))
}

/// Why dpkg was interrupted, when its journal says so: the numbered
/// entries apt itself looks for before it refuses to go on.
fn dpkg_journal(cx: &Context<'_>) -> Result<Option<String>> {
    let dir = cx.root.path(DPKG_UPDATES);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {DPKG_UPDATES}")),
    };
    let mut journal = Vec::new();
    for e in entries {
        let name = e.with_context(|| format!("listing {DPKG_UPDATES}"))?.file_name();
        let name = name.to_string_lossy();
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            journal.push(name.into_owned());
        }
    }
    journal.sort();
    Ok((!journal.is_empty()).then(|| format!("{DPKG_UPDATES} holds unapplied entries ({})", journal.join(", "))))
}

/// `dpkg --configure -a`, once the package lock is free, keeping old
/// config files as the upgrade does. It folds dpkg's journal into its
/// database and configures what was unpacked; a package killed while it
/// was being unpacked it cannot configure ("reinstall it"), and says so
/// with a failure: that one the upgrade reinstalls, so the failure is
/// logged and the upgrade goes on, its own result the verdict.
async fn repair_dpkg(cx: &Context<'_>, lock_timeout: Duration, why: &str) -> Result<()> {
    tracing::warn!(%why, "dpkg was interrupted mid-operation; repairing with `dpkg --configure -a`");
    if !cx.dry_run {
        wait_free(cx.root, probes(Family::Debian), lock_timeout).await?;
    }
    let repair =
        noninteractive(Cmd::new(["dpkg", "--force-confdef", "--force-confold", "--configure", "-a"], UPGRADE_TIMEOUT));
    if let Some(r) = cx.exec(&repair).await?
        && let Err(e) = r.check(&repair)
    {
        tracing::warn!(error = %format!("{e:#}"), "dpkg could not configure every package; the upgrade reinstalls the rest");
    }
    Ok(())
}

async fn dnf_upgrade(cx: &Context<'_>) -> Result<Option<u64>> {
    let upgrade = Cmd::new(["dnf", "-y", "upgrade", "--refresh"], UPGRADE_TIMEOUT);
    let out = retried(cx, &upgrade, |_| None).await.context("upgrading packages")?;
    Ok(out.map(|o| dnf_count(&o.stdout)))
}

/// Why a reboot is required, or `None`.
async fn reboot_required(cx: &Context<'_>, family: Family) -> Result<Option<String>> {
    match family {
        Family::Debian => {
            if !cx.root.exists(REBOOT_REQUIRED) {
                return Ok(None);
            }
            let pkgs = cx.root.read_string_opt(REBOOT_REQUIRED_PKGS)?.unwrap_or_default();
            let pkgs: Vec<&str> = pkgs.split_whitespace().collect();
            Ok(Some(if pkgs.is_empty() {
                format!("{REBOOT_REQUIRED} exists")
            } else {
                format!("{REBOOT_REQUIRED} exists (for {})", pkgs.join(", "))
            }))
        }
        Family::Rhel => {
            let cmd = Cmd::new(["needs-restarting", "-r"], CHECK_TIMEOUT);
            match cx.runner.run(&cmd).await {
                Ok(o) if o.code == Some(1) => Ok(Some("`needs-restarting -r` says so".into())),
                Ok(o) if o.code == Some(0) => Ok(None),
                Ok(o) => {
                    bail!("`{cmd}` exited with {:?}: {} (install dnf-utils)", o.code, tail(&o.stderr, 5))
                }
                Err(e) => Err(e).context("checking whether a reboot is needed (install dnf-utils)"),
            }
        }
    }
}

/// Packages upgraded or newly installed, from apt's summary line
/// `3 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.`
pub fn apt_count(stdout: &str) -> u64 {
    let Some(line) = stdout.lines().find(|l| l.contains(" upgraded, ") && l.contains(" newly installed")) else {
        return 0;
    };
    line.split(", ")
        .filter(|part| part.ends_with(" upgraded") || part.ends_with(" newly installed"))
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Packages upgraded or installed, from dnf's transaction summary
/// (`Upgrade  3 Packages` in dnf 4, `Upgrading: 3 packages` in dnf 5).
pub fn dnf_count(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let verb = words.next()?.trim_end_matches(':');
            let n = words.next()?.parse::<u64>().ok()?;
            let unit = words.next()?.to_ascii_lowercase();
            (["Upgrade", "Install", "Upgrading", "Installing"].contains(&verb) && unit.starts_with("package"))
                .then_some(n)
        })
        .sum()
}

#[cfg(test)]
mod tests;
