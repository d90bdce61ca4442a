//! Stage `host`: what kubeadm and the kubelet need from the host and nobody
//! else sets (DESIGN.md §pipeline, the `host` paragraph): `overlay` and
//! `br_netfilter` loaded, forwarding and bridge netfilter on, swap off, and
//! containerd configured (systemd cgroups, the version's sandbox image from
//! the image mirror) and running with its current config and environment.
//!
//! Every setting is first written where the next boot reads it
//! (modules-load.d, sysctl.d, fstab and masked swap units, containerd's
//! config.toml), then applied now ([`live`]). Under `--root` only the files
//! are written: the image applies them when it boots. A rerun with nothing
//! changed writes nothing and runs nothing but reads. Without a
//! `kubernetes:` section the stage is skipped.

pub(crate) mod live;
mod render;

use anyhow::{Context as _, Result};
use async_trait::async_trait;

use crate::config::{Config, Kubernetes};
use crate::root::Change;
use crate::stages::kubernetes::kubeadm_version;
use crate::stages::{Context, Details, Done, Fingerprint, Outcome, Stage};

pub const MODULES_LOAD: &str = "/etc/modules-load.d/node-init-kubernetes.conf";
pub const SYSCTL: &str = "/etc/sysctl.d/99-node-init-kubernetes.conf";
pub const FSTAB: &str = "/etc/fstab";
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const CONTAINERD_BACKUP: &str = "/etc/containerd/config.toml.node-init-orig";
/// Where a mask goes: above the units packages and generators provide.
const UNIT_DIR: &str = "/etc/systemd/system";
/// Where an image's packages put containerd's unit.
const CONTAINERD_UNITS: [&str; 3] = [
    "/etc/systemd/system/containerd.service",
    "/usr/lib/systemd/system/containerd.service",
    "/lib/systemd/system/containerd.service",
];

pub struct HostStage;

#[async_trait]
impl Stage for HostStage {
    fn name(&self) -> &'static str {
        "host"
    }

    /// The version picks the pause image, the repository its registry.
    fn inputs(&self, c: &Config, f: &mut Fingerprint) {
        let Some(k) = &c.kubernetes else {
            f.add("kubernetes", false);
            return;
        };
        f.add("kubernetes", true)
            .add("version", k.version.map(|v| v.to_string()).unwrap_or_default())
            .add("image_repository", k.image_repository.as_ref().map_or("", |r| r.0.as_str()));
    }

    async fn run(&self, cx: &Context<'_>) -> Result<Outcome> {
        let Some(k) = &cx.config.kubernetes else {
            return Ok(Outcome::Skipped("no kubernetes key in the config".into()));
        };
        prepare(cx, k, cx.root.is_host()).await
    }
}

/// The stage's work; `live` is false under `--root`, where nothing runs.
async fn prepare(cx: &Context<'_>, k: &Kubernetes, live: bool) -> Result<Outcome> {
    let containerd = if live {
        Some(live::containerd(cx).await?)
    } else {
        require_containerd(cx)?;
        None
    };
    let version = match k.version {
        Some(v) => v,
        None => kubeadm_version(cx).await?,
    };
    let mut changed = Changed::default();
    changed.track(MODULES_LOAD, cx.write(MODULES_LOAD, render::modules_load().as_bytes(), 0o644)?);
    let sysctl_changed = changed.track(SYSCTL, cx.write(SYSCTL, render::sysctl_conf().as_bytes(), 0o644)?);
    let swaps = if live { live::swaps_now(cx.root)? } else { Vec::new() };
    let (disabled, masked) = swap_off_for_good(cx, &swaps, &mut changed)?;
    let image = render::sandbox_image(k.image_repository.as_ref(), version);
    let config_changed = containerd_config(cx, &image, &mut changed)?;
    let restart = match &containerd {
        Some(c) => live::apply(cx, &live::observe(cx, c, swaps, sysctl_changed, config_changed)?).await?,
        None => None,
    };
    let restarted = restart.is_some();

    let mut details = Details::new();
    details.insert("kubernetes_version".into(), version.to_string().into());
    details.insert("sandbox_image".into(), image.into());
    details.insert("swap_lines_disabled".into(), disabled.into());
    details.insert("swap_units_masked".into(), masked.into());
    details.insert("containerd_restarted".into(), restarted.into());
    if let Some(why) = restart {
        details.insert("containerd_restart_reason".into(), why.into());
    }
    details.insert("live".into(), live.into());
    details.insert("changed".into(), changed.0.into());
    Ok(Outcome::Done(Done::new(details).summary(summary(disabled, config_changed, restarted, live))))
}

/// Paths whose content changed in this run.
#[derive(Default)]
struct Changed(Vec<String>);

impl Changed {
    fn track(&mut self, path: &str, change: Change) -> bool {
        let changed = change != Change::Unchanged;
        if changed {
            self.0.push(path.to_owned());
        }
        changed
    }
}

/// Under `--root`: the image must carry containerd's unit.
fn require_containerd(cx: &Context<'_>) -> Result<()> {
    if CONTAINERD_UNITS.iter().any(|p| cx.root.exists(p)) {
        return Ok(());
    }
    anyhow::bail!(
        "containerd is not installed in {} (no {}): the image must carry containerd, kubeadm, kubelet and kubectl",
        cx.root.base().display(),
        CONTAINERD_UNITS.join(", ")
    )
}

/// Comments out fstab's swap lines and masks the units systemd would make
/// for them (and for swap active now), so no boot turns swap back on.
/// Returns the lines disabled in this run and the units masked.
fn swap_off_for_good(cx: &Context<'_>, active: &[String], changed: &mut Changed) -> Result<(usize, Vec<String>)> {
    let mut specs = Vec::new();
    let mut disabled = 0;
    if let Some(text) = cx.root.read_string_opt(FSTAB)? {
        let edit = render::fstab_without_swap(&text);
        if edit.disabled > 0 {
            changed.track(FSTAB, cx.write(FSTAB, edit.text.as_bytes(), mode_of(cx, FSTAB, 0o644))?);
        }
        (specs, disabled) = (edit.swaps, edit.disabled);
    }
    let mut units: Vec<String> = Vec::new();
    for unit in specs.iter().chain(active).filter_map(|s| render::swap_unit(s)) {
        if !units.contains(&unit) {
            units.push(unit);
        }
    }
    for unit in &units {
        let path = format!("{UNIT_DIR}/{unit}");
        let change = cx
            .symlink(&path, "/dev/null")
            .with_context(|| format!("masking {unit} to keep swap off; remove or disable that unit"))?;
        changed.track(&path, change);
    }
    Ok((disabled, units))
}

/// Writes containerd's config, keeping a config node-init did not write as
/// [`CONTAINERD_BACKUP`] first (once: a later run never overwrites it).
/// Returns whether the config changed.
fn containerd_config(cx: &Context<'_>, image: &str, changed: &mut Changed) -> Result<bool> {
    let old = cx.root.read_opt(CONTAINERD_CONFIG)?;
    let foreign = old.as_deref().filter(|o| !o.is_empty() && !o.starts_with(render::WRITTEN_BY.as_bytes()));
    if let Some(old) = foreign
        && !cx.root.exists(CONTAINERD_BACKUP)
    {
        let mode = mode_of(cx, CONTAINERD_CONFIG, 0o644);
        changed.track(CONTAINERD_BACKUP, cx.write(CONTAINERD_BACKUP, old, mode)?);
    }
    let text = render::containerd_config(image);
    Ok(changed.track(CONTAINERD_CONFIG, cx.write(CONTAINERD_CONFIG, text.as_bytes(), 0o644)?))
}

/// A file's permission bits, so an edit keeps them.
fn mode_of(cx: &Context<'_>, path: &str, default: u32) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(cx.root.path(path)).map_or(default, |m| m.permissions().mode() & 0o7777)
}

fn summary(disabled: usize, config_changed: bool, restarted: bool, live: bool) -> String {
    let swap = match disabled {
        0 => "swap off".to_owned(),
        1 => "swap off (1 line in /etc/fstab)".to_owned(),
        n => format!("swap off ({n} lines in /etc/fstab)"),
    };
    let containerd = match (config_changed, restarted) {
        (true, true) => "containerd config updated and restarted",
        (true, false) => "containerd config updated",
        (false, true) => "containerd restarted",
        (false, false) => "containerd config unchanged",
    };
    let mut line = format!("modules, sysctls, {swap}, {containerd}");
    if !live {
        line.push_str("; nothing run under --root: the image applies them when it boots");
    }
    line
}

#[cfg(test)]
mod tests;
