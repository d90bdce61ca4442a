//! The state file `/var/lib/node-init/state.json`: per stage, its status,
//! attempts, boot, times and last error; plus every reboot node-init asked
//! for; plus the events reported to MAAS and whether MAAS has them. Written
//! atomically after every transition, so a run killed at any instant leaves
//! the previous or the next state, never a torn one.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::root::Root;

pub const STATE_DIR: &str = "/var/lib/node-init";
pub const STATE_PATH: &str = "/var/lib/node-init/state.json";
pub const DONE_PATH: &str = "/var/lib/node-init/done";
pub const LOCK_PATH: &str = "/var/lib/node-init/lock";
/// The node's key for secrets in stage fingerprints (0600).
pub const KEY_PATH: &str = "/var/lib/node-init/fingerprint.key";
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    #[default]
    Running,
    Done,
    Skipped,
    Failed,
    RebootPending,
}

impl Status {
    /// Done or skipped: nothing left to do while the inputs stay the same.
    pub fn settled(self) -> bool {
        matches!(self, Self::Done | Self::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::RebootPending => "reboot-pending",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub status: Status,
    pub attempts: u32,
    /// The boot in which the stage last started.
    pub boot_id: String,
    /// SHA-256 of the stage's inputs; a change makes a settled stage run again.
    pub inputs: String,
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it was skipped or needs a reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The one line an operator reads first: what the stage did or warns of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The boot a reboot for this stage left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebooted_from_boot: Option<String>,
    /// What the stage did, for `status` (files written, packages upgraded...).
    #[serde(default, alias = "facts", skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootRecord {
    pub stage: String,
    /// The boot that was rebooted out of.
    pub boot_id: String,
    pub at: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub stages: BTreeMap<String, StageRecord>,
    #[serde(default)]
    pub reboots: Vec<RebootRecord>,
    /// Events for MAAS's status endpoint: delivered, pending or given up.
    #[serde(default, skip_serializing_if = "crate::maas::events::Outbox::is_empty")]
    pub maas: crate::maas::events::Outbox,
    /// Successes of work done ahead of its stage's turn, kept for a later
    /// run (after the patch's reboot); see `stages::ahead`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ahead: BTreeMap<String, crate::stages::ahead::Kept>,
}

impl State {
    /// The state under `root`, or an empty one before the first run.
    pub fn load(root: &Root) -> Result<Self> {
        let Some(text) = root.read_string_opt(STATE_PATH)? else { return Ok(Self::default()) };
        serde_json::from_str(&text)
            .with_context(|| format!("parsing {} (move it aside to start over)", root.path(STATE_PATH).display()))
    }

    pub fn save(&self, root: &Root) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).context("serializing state")?;
        text.push('\n');
        root.write(STATE_PATH, text.as_bytes(), 0o644)?;
        Ok(())
    }
}

/// The current boot's id, read under the root so a test or an image can
/// present its own; `unknown` where there is none (an unbooted image).
pub fn boot_id(root: &Root) -> Result<String> {
    Ok(root
        .read_string_opt(BOOT_ID_PATH)?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into()))
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
