//! The distribution family of the node (or image), from `/etc/os-release`,
//! and everything that differs per family: the trust store's anchor
//! directory, its system bundle and update tool. Both the `proxy` stage
//! (which writes the trust) and `verify` (which reads it) ask here.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::root::Root;
use crate::runner::Cmd;

/// How long the trust store's update tool may take.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(300);

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

impl Family {
    /// Where local CA anchors go.
    pub fn anchor_dir(self) -> &'static str {
        match self {
            Self::Debian => "/usr/local/share/ca-certificates",
            Self::Rhel => "/etc/pki/ca-trust/source/anchors",
        }
    }

    /// The system bundle every TLS client reads.
    pub fn bundle(self) -> &'static str {
        match self {
            Self::Debian => "/etc/ssl/certs/ca-certificates.crt",
            Self::Rhel => "/etc/pki/tls/certs/ca-bundle.crt",
        }
    }

    /// The tool that rebuilds the bundle from the anchors.
    pub fn update_command(self) -> Cmd {
        match self {
            Self::Debian => Cmd::new(["update-ca-certificates"], UPDATE_TIMEOUT),
            Self::Rhel => Cmd::new(["update-ca-trust", "extract"], UPDATE_TIMEOUT),
        }
    }
}
