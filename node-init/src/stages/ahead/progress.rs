//! What a live run shows `status` of its work ahead ([`super::Ahead`]):
//! each piece of work's state and, while it runs, how far it is ("6/8 in
//! containerd; pulling etcd:3.5.15-0"), in a file on /run
//! ([`PROGRESS_PATH`]).
//!
//! /run is a tmpfs, so nothing of it outlives the boot. The file is the
//! run's own: the run holding the lock clears what a run killed without a
//! reboot left there ([`clear`]: its file, or a temp file cut off
//! mid-write), and removes it as it ends. `status` shows a file only while
//! the process that wrote it lives ([`Progress::live`]). Showing is best
//! effort: it never changes the run. No secret is in it: work names,
//! states, image names, and the errors the journal has.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::root::{self, Root};

pub const PROGRESS_DIR: &str = "/run/node-init";
pub const PROGRESS_PATH: &str = "/run/node-init/ahead.json";

/// What [`PROGRESS_PATH`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The run's process, and its start time (field 22 of
    /// `/proc/PID/stat`), so a file a killed run left is not taken for a
    /// live run's even if its pid is reused.
    pub pid: u32,
    pub started: u64,
    pub boot_id: String,
    /// In the pipeline's order.
    pub work: Vec<WorkProgress>,
}

/// One piece of work's line in [`Progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkProgress {
    pub name: String,
    /// `waiting` (for the stage it runs beside), `running`, `done`,
    /// `failed: ERROR` (its stage does it again at its turn), `stopped at
    /// its stage's turn` (which came first, or passed without it) or `not
    /// needed`.
    pub state: String,
    /// When it entered that state; empty while `waiting`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub since: String,
    /// How far running work is, when it says.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub progress: String,
}

impl Progress {
    /// The progress of the run live under `root`, if one is: its process is
    /// the one that wrote the file, in this boot.
    pub fn live(root: &Root) -> Option<Self> {
        let text = root.read_string_opt(PROGRESS_PATH).ok()??;
        let p: Self = serde_json::from_str(&text).ok()?;
        let boot = crate::state::boot_id(root).ok()?;
        (p.boot_id == boot && process_start(p.pid) == Some(p.started)).then_some(p)
    }
}

/// A process's start time in clock ticks since boot, from `/proc/PID/stat`
/// (field 22; the command in field 2 may hold spaces and parentheses, so
/// fields are counted after its last `)`). The host's /proc, not a root's:
/// the run is a process on this host whatever root it works on.
pub(super) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Removes what a run shows under `root`: the file, the temp file a write
/// cut off left, and the directory once nothing else is in it.
pub fn clear(root: &Root) {
    let file = Path::new(PROGRESS_PATH);
    for p in [file.to_path_buf(), root::temp_path(file)] {
        if let Err(e) = root.remove(&p) {
            tracing::debug!(error = %format!("{e:#}"), "could not clear the work ahead's progress");
        }
    }
    // Not empty: something else is there, and stays.
    let _ = std::fs::remove_dir(root.path(PROGRESS_DIR));
}

/// A change to one piece of work's line.
pub(super) enum Shown {
    /// A new state; the progress of the old one is cleared.
    State(String),
    Progress(String),
}

/// The [`Progress`] of one run, and the root it is shown in, if any.
pub(super) struct Board {
    root: Option<Root>,
    now: Mutex<Progress>,
}

impl Board {
    /// Every piece of work `waiting`; shown nowhere until [`Board::in_root`].
    pub(super) fn new(names: &[&str], boot_id: &str) -> Self {
        let pid = std::process::id();
        let now = Progress {
            pid,
            started: process_start(pid).unwrap_or_default(),
            boot_id: boot_id.to_owned(),
            work: names
                .iter()
                .map(|n| WorkProgress { name: (*n).into(), state: "waiting".into(), ..Default::default() })
                .collect(),
        };
        Self { root: None, now: Mutex::new(now) }
    }

    pub(super) fn in_root(mut self, root: Root) -> Self {
        self.root = Some(root);
        self
    }

    /// Applies `changes` and writes the file once.
    pub(super) fn show<'n>(&self, changes: impl IntoIterator<Item = (&'n str, Shown)>) {
        let Some(root) = &self.root else { return };
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changed = false;
        for (name, change) in changes {
            let Some(w) = now.work.iter_mut().find(|w| w.name == name) else { continue };
            match change {
                Shown::State(state) => {
                    w.state = state;
                    w.since = crate::state::now_rfc3339();
                    w.progress.clear();
                }
                Shown::Progress(line) => w.progress = line,
            }
            changed = true;
        }
        if !changed {
            return;
        }
        let text = serde_json::to_string_pretty(&*now).unwrap_or_default() + "\n";
        if let Err(e) = root.write(PROGRESS_PATH, text.as_bytes(), 0o644) {
            tracing::debug!(error = %format!("{e:#}"), "could not show the work ahead");
        }
    }
}

impl Drop for Board {
    /// The run is ending: nothing is ahead any more.
    fn drop(&mut self) {
        if let Some(root) = &self.root {
            clear(root);
        }
    }
}
