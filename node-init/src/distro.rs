//! The distribution family of the node (or image), from `/etc/os-release`:
//! it decides the trust store's paths and the package manager.

use anyhow::{Context as _, Result, bail};

use crate::root::Root;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Debian,
    Rhel,
}

/// The distro family, from `/etc/os-release` under the root.
pub fn family(root: &Root) -> Result<Family> {
    let text = root.read_string_opt("/etc/os-release")?.context("reading /etc/os-release: not found")?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(|v| v.trim().trim_matches('"').to_ascii_lowercase())
            .unwrap_or_default()
    };
    let ids = format!("{} {}", field("ID"), field("ID_LIKE"));
    let has = |w: &str| ids.split_whitespace().any(|i| i == w);
    if has("debian") || has("ubuntu") {
        Ok(Family::Debian)
    } else if ["rhel", "fedora", "centos", "rocky", "almalinux"].iter().any(|w| has(w)) {
        Ok(Family::Rhel)
    } else {
        bail!("unsupported distribution {:?} in /etc/os-release (expected the Debian or RHEL family)", ids.trim())
    }
}
