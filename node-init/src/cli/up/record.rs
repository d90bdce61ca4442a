//! `DIR/state.json`: what `up` has done to MAAS, written atomically (as the
//! node's own state: temp file, fsync, rename, fsync of the directory)
//! after every step and before the next one starts, so that a run killed
//! at any instant and run again continues instead of starting over.
//!
//! An intent is recorded before each change MAAS cannot undo by itself:
//! `vip: reserving` before the reserve, the allocation count before each
//! allocate. A rerun that finds an intent without its result asks MAAS
//! what became of it (the user's reserved addresses; the machines carrying
//! this cluster's `agent_name`) instead of doing it again.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

pub const FILE: &str = "state.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vip {
    /// Nothing asked of MAAS yet.
    Free,
    /// A reserve was (or is about to be) sent; its answer is unknown.
    Reserving,
    Reserved,
    Released,
    /// `down --keep-vip` left it reserved.
    Kept,
}

/// What node-init did on a machine, as its events told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    #[default]
    Pending,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub system_id: String,
    pub hostname: String,
    pub fqdn: String,
    /// The node's address when MAAS knows it.
    #[serde(default)]
    pub address: Option<String>,
    /// `init` or `control-plane`.
    pub role: String,
    pub allocated_at: String,
    /// When the deploy was sent.
    #[serde(default)]
    pub deploy_sent: Option<String>,
    /// MAAS's status name, last seen.
    #[serde(default)]
    pub maas_status: String,
    /// The stage node-init reported last.
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub outcome: Outcome,
    /// What failed, in MAAS's or node-init's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The newest event of this machine already read.
    #[serde(default)]
    pub last_event: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
}

/// One step done, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// A random id: names the cluster in MAAS (`agent_name`, comments).
    pub cluster: String,
    pub maas: String,
    pub nodes: usize,
    pub image: String,
    pub vip: String,
    pub vip_state: Vip,
    /// The DNS name the VIP was reserved under.
    pub vip_hostname: String,
    /// Where the secrets are; minted by `up` when it made them.
    pub secrets: PathBuf,
    #[serde(default)]
    pub secrets_minted: bool,
    pub created: String,
    /// Allocations sent, answered or not.
    #[serde(default)]
    pub allocations_sent: usize,
    #[serde(default)]
    pub machines: Vec<Node>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// When `down` released the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<String>,
}

impl Record {
    /// The `agent_name` every machine of this cluster is allocated under.
    pub fn agent_name(&self) -> String {
        format!("node-init-up/{}", self.cluster)
    }

    pub fn step(&mut self, step: &str, detail: impl Into<String>) {
        self.steps.push(Step { step: step.into(), at: crate::state::now_rfc3339(), detail: detail.into() });
    }

    pub fn done(&self, step: &str) -> bool {
        self.steps.iter().any(|s| s.step == step)
    }
}

/// The state in `dir`, or `None` before the first run.
pub fn load(dir: &Path) -> Result<Option<Record>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        crate::error::UsageError(format!("--state: {} is not a state `up` wrote: {e}", path.display())).into()
    })
}

pub fn save(dir: &Path, r: &Record) -> Result<()> {
    let mut text = serde_json::to_string_pretty(r).context("serializing the state")?;
    text.push('\n');
    crate::root::write_atomic(&dir.join(FILE), text.as_bytes(), 0o600)?;
    Ok(())
}
