//! Work done ahead of its stage's turn: what a later stage needs neither a
//! package lock nor anything of the stages before it for (the image
//! pre-pull, the DNS wait, a join's token discovery) runs beside a stage
//! that allows it (the patch: minutes of apt and dpkg), so a first boot
//! takes about max(patch, pulls) + join rather than their sum.
//!
//! The contract, which keeps the pipeline's meaning:
//! - A result counts only at its stage's turn, and only a success counts.
//!   At the turn a stage takes the success ([`Ahead::take`]) or waits for
//!   work under way that is worth finishing ([`Ahead::wait`]); anything
//!   else (failed, stopped, never started) and the stage does the work
//!   itself, as a serial run would. So a failure fails the run at the same
//!   stage, with the same message, and a wait never ends sooner than the
//!   serial one would (a DNS record MAAS writes late still counts).
//! - Nothing ahead writes the state or tells MAAS: the stages' records and
//!   events keep the pipeline's order.
//! - A success that depends on nothing a reboot changes is kept in the
//!   state ([`Kept`], under a key of everything it was made from), so after
//!   the patch's reboot it is taken rather than asked again. Pulled images
//!   need no record: containerd keeps them.
//! - While the run lives, the work's state and progress ("5/8 in
//!   containerd; pulling etcd") are shown to `status` ([`progress`]). A
//!   stage's turn that passes without taking its work (it was skipped)
//!   stops it ([`Ahead::turn_over`]).

pub mod progress;

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use self::progress::{Board, Shown};
use super::{Details, Done, Fingerprint};
use crate::root::Root;

/// A success kept across runs (and reboots) in the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// What the result was made from, as a [`Fingerprint`].
    pub key: String,
    pub boot_id: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default)]
    pub details: Details,
}

#[derive(Debug, Clone)]
enum Slot {
    /// Not started (the pipeline has not reached the stage it runs beside).
    Idle,
    Running,
    /// A success, with the [`Kept`] key it was made under, if any.
    Ok(Box<Done>, Option<String>),
    /// Failed or stopped; the stage will do the work at its turn.
    Gone,
}

/// `done` as its stage reports it, marked `NAME_done_ahead` with the boot
/// it was done in (unless it carries the mark of an earlier boot).
fn marked(done: &Done, name: &str, boot_id: &str) -> Done {
    let mut done = done.clone();
    done.details.entry(format!("{name}_done_ahead")).or_insert_with(|| boot_id.into());
    done
}

/// The slots of one run's ahead work, by name (`dns`, `discovery`,
/// `images`), and the node's fingerprint key for [`Kept`] keys.
pub struct Ahead {
    slots: BTreeMap<&'static str, watch::Sender<Slot>>,
    kept: Mutex<BTreeMap<String, Kept>>,
    fingerprint_key: Vec<u8>,
    boot_id: String,
    /// What `status` is shown of the work.
    board: Board,
}

impl Ahead {
    /// `names` are the slots this run may fill; `kept` the state's record.
    pub fn new(names: &[&'static str], kept: BTreeMap<String, Kept>, fingerprint_key: &[u8], boot_id: &str) -> Self {
        let slots = names.iter().map(|n| (*n, watch::Sender::new(Slot::Idle))).collect();
        Self {
            slots,
            kept: Mutex::new(kept),
            fingerprint_key: fingerprint_key.to_vec(),
            boot_id: boot_id.to_owned(),
            board: Board::new(names, boot_id),
        }
    }

    /// Shows the work to `status` in `root`'s [`progress::PROGRESS_PATH`]
    /// from [`Ahead::start`] until the value is dropped.
    pub fn showing_progress_in(mut self, root: Root) -> Self {
        self.board = self.board.in_root(root);
        self
    }

    /// How far `name`'s running work is, for `status`.
    pub fn progress(&self, name: &str, line: impl Into<String>) {
        if self.running(name) {
            self.board.show([(name, Shown::Progress(line.into()))]);
        }
    }

    /// A fingerprint under the node's key, for a [`Kept`] key.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::new(&self.fingerprint_key)
    }

    /// Marks every slot as running: called by the pipeline as it lets the
    /// work start, so a turn that comes before the work is first polled
    /// waits for it rather than doing it twice.
    pub fn start(&self) {
        let started = self
            .slots
            .iter()
            .filter(|(_, s)| s.send_if_modified(|v| matches!(v, Slot::Idle).then(|| *v = Slot::Running).is_some()))
            .map(|(name, _)| (*name, Shown::State("running".into())));
        self.board.show(started.collect::<Vec<_>>());
    }

    /// Whether `name` may run: started and not stopped by its turn.
    pub fn running(&self, name: &str) -> bool {
        self.slots.get(name).is_some_and(|s| matches!(*s.borrow(), Slot::Running))
    }

    /// Runs `work` for slot `name`, unless its turn stops it first. With
    /// `keep`, a success an earlier run kept under that key is the result
    /// and `work` never runs; a new success is kept under it.
    pub async fn run<F>(&self, name: &'static str, keep: Option<String>, work: F)
    where
        F: std::future::Future<Output = anyhow::Result<Done>>,
    {
        let Some(slot) = self.slots.get(name) else { return };
        let mut rx = slot.subscribe();
        // Until the pipeline reaches the stage this work runs beside.
        match rx.wait_for(|s| !matches!(s, Slot::Idle)).await {
            Ok(s) if matches!(*s, Slot::Running) => {}
            _ => return,
        }
        let earlier = keep.as_deref().and_then(|key| self.kept(name, key));
        let work = async move {
            match earlier {
                Some(done) => Ok(done),
                None => work.await,
            }
        };
        let result = tokio::select! {
            r = work => r,
            _ = rx.wait_for(|s| !matches!(s, Slot::Running)) => {
                tracing::info!(work = name, "stopped: the stage's turn came first");
                return;
            }
        };
        let (next, state) = match result {
            Ok(done) => {
                tracing::info!(work = name, "done ahead of its turn");
                (Slot::Ok(Box::new(done), keep), "done".to_owned())
            }
            Err(e) => {
                let e = format!("{e:#}");
                tracing::warn!(work = name, error = %e, "failed ahead of its turn; the stage will try again at its turn");
                (Slot::Gone, format!("failed: {e}"))
            }
        };
        if slot.send_if_modified(|v| matches!(v, Slot::Running).then(|| *v = next).is_some()) {
            self.board.show([(name, Shown::State(state))]);
        }
    }

    /// Slots `names` whose work ended without a result (a stage's `ahead`
    /// that returned without running one, which it may do before the
    /// pipeline starts the work) are given up, so no turn waits for them.
    pub fn abandon(&self, names: &[&str]) {
        for name in names {
            let unfilled = |v: &mut Slot| matches!(v, Slot::Idle | Slot::Running).then(|| *v = Slot::Gone).is_some();
            if let Some(slot) = self.slots.get(name)
                && slot.send_if_modified(unfilled)
            {
                self.board.show([(*name, Shown::State("not needed".into()))]);
            }
        }
    }

    /// A success kept by an earlier run under `key`, as ahead work's result.
    pub fn kept(&self, name: &str, key: &str) -> Option<Done> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let k = kept.get(name).filter(|k| k.key == key)?;
        Some(marked(&Done { summary: k.summary.clone(), details: k.details.clone() }, name, &k.boot_id))
    }

    /// At the stage's turn: the success if there is one now; work still
    /// under way is stopped, so the stage's own run starts afresh.
    pub fn take(&self, name: &str) -> Option<Done> {
        let slot = self.slots.get(name)?;
        let mut out = None;
        let mut stopped = false;
        slot.send_modify(|v| {
            if let Slot::Ok(d, _) = v {
                out = Some(marked(d, name, &self.boot_id));
            } else {
                stopped = matches!(v, Slot::Running);
                *v = Slot::Gone;
            }
        });
        if stopped {
            self.board.show([(name, Shown::State("stopped at its stage's turn".into()))]);
        }
        out
    }

    /// After the stage's turn: work still under way for it is stopped.
    pub fn turn_over(&self, names: &[&str]) {
        for name in names {
            self.take(name);
        }
    }

    /// At the stage's turn: waits for work under way, then its success.
    pub async fn wait(&self, name: &str) -> Option<Done> {
        let slot = self.slots.get(name)?;
        let mut rx = slot.subscribe();
        let settled = rx.wait_for(|s| !matches!(s, Slot::Running)).await.ok()?.clone();
        match settled {
            Slot::Ok(d, _) => Some(marked(&d, name, &self.boot_id)),
            _ => None,
        }
    }

    /// The successes to keep in the state: the earlier ones, with this
    /// run's over them.
    pub fn to_keep(&self) -> BTreeMap<String, Kept> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, slot) in &self.slots {
            if let Slot::Ok(d, Some(key)) = &*slot.borrow()
                && kept.get(*name).is_none_or(|k| &k.key != key)
            {
                kept.insert(
                    (*name).to_owned(),
                    Kept {
                        key: key.clone(),
                        boot_id: self.boot_id.clone(),
                        at: crate::state::now_rfc3339(),
                        summary: d.summary.clone(),
                        details: d.details.clone(),
                    },
                );
            }
        }
        kept.clone()
    }
}

#[cfg(test)]
mod tests;
