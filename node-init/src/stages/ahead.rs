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
//!   containerd; pulling etcd") are shown to `status` through a file under
//!   /run ([`PROGRESS_PATH`]), which the run removes as it ends and a reboot
//!   clears.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Details, Done, Fingerprint};

/// Where a live run shows its work ahead to `status`: on /run, a tmpfs, so
/// nothing of it outlives the boot. The directory is the run's: the run
/// holding the lock clears what a killed run left there (a temp file cut
/// off mid-write), and removes it as it ends.
pub const PROGRESS_DIR: &str = "/run/node-init";
pub const PROGRESS_PATH: &str = "/run/node-init/ahead.json";

/// Removes the progress directory `dir` (a root's [`PROGRESS_DIR`]) and
/// what is in it; best effort, as showing is.
pub fn clear_progress(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::debug!(error = %e, path = %dir.display(), "could not clear the work ahead's progress");
    }
}

/// What [`PROGRESS_PATH`] holds. No secret is in it: slot names, states,
/// image names and the errors the journal has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The run's process, and its start time (field 22 of
    /// `/proc/PID/stat`), so a file a killed run left is not taken for a
    /// live run's even if its pid is reused.
    pub pid: u32,
    pub started: u64,
    pub boot_id: String,
    pub work: Vec<WorkProgress>,
}

/// One slot's line in [`Progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkProgress {
    pub name: String,
    /// `running`, `done`, `failed: ERROR` (its stage does it again at its
    /// turn), `stopped at its stage's turn` (which came first, or passed
    /// without it) or `not needed`.
    pub state: String,
    /// When it entered that state.
    pub since: String,
    /// How far running work is, when it says.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub progress: String,
}

impl Progress {
    /// The progress a live run shows under `root`, if a run is live: its
    /// process is the one that wrote the file, in this boot.
    pub fn live(root: &crate::root::Root) -> Option<Self> {
        let text = root.read_string_opt(PROGRESS_PATH).ok()??;
        let p: Self = serde_json::from_str(&text).ok()?;
        let boot = crate::state::boot_id(root).ok()?;
        (p.boot_id == boot && process_start(p.pid) == Some(p.started)).then_some(p)
    }
}

/// A process's start time in clock ticks since boot, from `/proc/PID/stat`
/// (field 22; the command in field 2 may hold spaces and parentheses, so
/// fields are counted after its last `)`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

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
    /// The file [`Progress`] is shown in, and what it shows.
    shown: Option<PathBuf>,
    progress: Mutex<Progress>,
}

impl Ahead {
    /// `names` are the slots this run may fill; `kept` the state's record.
    pub fn new(names: &[&'static str], kept: BTreeMap<String, Kept>, fingerprint_key: &[u8], boot_id: &str) -> Self {
        let slots = names.iter().map(|n| (*n, watch::Sender::new(Slot::Idle))).collect();
        let pid = std::process::id();
        let progress = Progress {
            pid,
            started: process_start(pid).unwrap_or_default(),
            boot_id: boot_id.to_owned(),
            work: names
                .iter()
                .map(|n| WorkProgress { name: (*n).into(), state: "waiting".into(), ..Default::default() })
                .collect(),
        };
        Self {
            slots,
            kept: Mutex::new(kept),
            fingerprint_key: fingerprint_key.to_vec(),
            boot_id: boot_id.to_owned(),
            shown: None,
            progress: Mutex::new(progress),
        }
    }

    /// Shows the work's [`Progress`] in `path` (the root's
    /// [`PROGRESS_PATH`]) from [`Ahead::start`] until the value is dropped.
    pub fn showing_progress_in(mut self, path: PathBuf) -> Self {
        self.shown = Some(path);
        self
    }

    /// How far `name`'s running work is, for `status`.
    pub fn progress(&self, name: &str, line: impl Into<String>) {
        if self.running(name) {
            self.show(name, None, Some(line.into()));
        }
    }

    /// Records `name`'s new state (and clears its progress) or its
    /// progress, and rewrites the shown file. Showing is best effort: it
    /// never changes the run.
    fn show(&self, name: &str, state: Option<String>, line: Option<String>) {
        let Some(path) = &self.shown else { return };
        let mut p = self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = p.work.iter_mut().find(|w| w.name == name) {
            if let Some(state) = state {
                w.state = state;
                w.since = crate::state::now_rfc3339();
                w.progress.clear();
            }
            if let Some(line) = line {
                w.progress = line;
            }
        }
        let text = serde_json::to_string_pretty(&*p).unwrap_or_default() + "\n";
        if let Err(e) = crate::root::write_atomic(path, text.as_bytes(), 0o644) {
            tracing::debug!(error = %format!("{e:#}"), "could not show the work ahead");
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
        for (name, s) in &self.slots {
            if s.send_if_modified(|v| matches!(v, Slot::Idle).then(|| *v = Slot::Running).is_some()) {
                self.show(name, Some("running".into()), None);
            }
        }
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
            self.show(name, Some(state), None);
        }
    }

    /// Slots `names` whose work ended without a result (a stage's `ahead`
    /// that returned without running one) are given up, so no turn waits
    /// for them.
    pub fn abandon(&self, names: &[&str]) {
        for name in names {
            if let Some(slot) = self.slots.get(name)
                && slot.send_if_modified(|v| matches!(v, Slot::Running).then(|| *v = Slot::Gone).is_some())
            {
                self.show(name, Some("not needed".into()), None);
            }
        }
    }

    /// A success kept by an earlier run under `key`, as ahead work's result.
    pub fn kept(&self, name: &str, key: &str) -> Option<Done> {
        let kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let k = kept.get(name).filter(|k| k.key == key)?;
        let mut details = k.details.clone();
        details.insert(format!("{name}_done_ahead"), k.boot_id.clone().into());
        Some(Done { summary: k.summary.clone(), details })
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
            self.show(name, Some("stopped at its stage's turn".into()), None);
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
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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

impl Drop for Ahead {
    /// The run is ending: nothing is ahead any more.
    fn drop(&mut self) {
        if let Some(dir) = self.shown.as_deref().and_then(std::path::Path::parent) {
            clear_progress(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ahead() -> Ahead {
        Ahead::new(&["dns", "images"], BTreeMap::new(), b"key", "boot-1")
    }

    fn done(line: &str) -> anyhow::Result<Done> {
        Ok(Done::new(Details::new()).summary(line))
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_is_taken_at_the_turn_and_kept_with_its_key() {
        let a = ahead();
        a.start();
        a.run("dns", Some("k1".into()), async { done("resolved") }).await;
        assert_eq!(a.take("dns").and_then(|d| d.summary).as_deref(), Some("resolved"));
        let kept = a.to_keep();
        assert_eq!(kept["dns"].key, "k1");
        assert_eq!(kept["dns"].boot_id, "boot-1");
        // A later run (after a reboot) finds it under the same key only.
        let later = Ahead::new(&["dns"], kept, b"key", "boot-2");
        assert!(later.kept("dns", "k2").is_none());
        let d = later.kept("dns", "k1").expect("kept");
        assert_eq!(d.details["dns_done_ahead"], "boot-1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_never_taken_and_work_not_started_never_runs() {
        let a = ahead();
        // Not started: the work never runs, and the turn gets nothing.
        let never = a.run("dns", None, async { panic!("ran before the pipeline let it") });
        let ((), taken) = tokio::join!(never, async { a.take("dns") });
        assert!(taken.is_none());
        let a = ahead();
        a.start();
        a.run("images", None, async { Err(anyhow::anyhow!("registry down")) }).await;
        assert!(a.wait("images").await.is_none());
        assert!(a.to_keep().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_turn_stops_work_under_way_or_waits_for_it() {
        let a = ahead();
        a.start();
        let slow = a.run("dns", Some("k".into()), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            done("late")
        });
        let turn = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            a.take("dns")
        };
        let ((), taken) = tokio::join!(slow, turn);
        assert!(taken.is_none(), "took work that was still under way");
        assert!(a.to_keep().is_empty(), "kept work that was stopped");
        // Waiting lets it finish.
        let pulls = a.run("images", None, async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            done("pulled")
        });
        let ((), waited) = tokio::join!(pulls, a.wait("images"));
        assert_eq!(waited.and_then(|d| d.summary).as_deref(), Some("pulled"));
    }

    /// What `status` reads while the run lives: each slot's state as it
    /// changes, in the pipeline's order, the progress of running work, and
    /// nothing once the run (the value) is gone.
    #[tokio::test(start_paused = true)]
    async fn the_work_is_shown_as_it_goes_and_the_file_goes_with_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::root::Root::new(dir.path()).unwrap();
        let path = root.path(PROGRESS_PATH);
        // The boot id `status` compares with the file's.
        let boot = crate::state::boot_id(&root).unwrap();
        let a = Ahead::new(&["dns", "discovery", "images"], BTreeMap::new(), b"key", &boot)
            .showing_progress_in(path.clone());
        let shown = || {
            let p = Progress::live(&root).expect("a live run's progress");
            p.work.into_iter().map(|w| (w.name, w.state, w.progress)).collect::<Vec<_>>()
        };
        let row = |n: &str, s: &str, p: &str| (n.to_owned(), s.to_owned(), p.to_owned());
        assert!(!path.exists(), "shown before the work starts");
        a.start();
        a.progress("images", "2/8 in containerd; pulling etcd:3.5.15-0");
        a.run("dns", None, async { Err(anyhow::anyhow!("NXDOMAIN for node1.maas")) }).await;
        assert_eq!(
            shown(),
            [
                row("dns", "failed: NXDOMAIN for node1.maas", ""),
                row("discovery", "running", ""),
                row("images", "running", "2/8 in containerd; pulling etcd:3.5.15-0"),
            ]
        );
        // A failed slot's progress is not shown (its stage redoes the work).
        a.progress("dns", "asking again");
        assert!(a.take("discovery").is_none());
        a.run("images", None, async { done("pulled") }).await;
        assert_eq!(
            shown(),
            [
                row("dns", "failed: NXDOMAIN for node1.maas", ""),
                row("discovery", "stopped at its stage's turn", ""),
                row("images", "done", ""),
            ]
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644);
        drop(a);
        assert!(!path.parent().unwrap().exists(), "the progress outlived the run");
    }

    /// A run killed with `kill -9` leaves its file; a process that is not
    /// the writer (another pid, or the same pid started at another time)
    /// does not make it live.
    #[test]
    fn a_file_a_killed_run_left_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::root::Root::new(dir.path()).unwrap();
        let boot = crate::state::boot_id(&root).unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let started = process_start(pid).expect("the child's start time");
        let write =
            |p: &Progress| root.write(PROGRESS_PATH, serde_json::to_string(p).unwrap().as_bytes(), 0o644).unwrap();
        let p = Progress { pid, started, boot_id: boot.clone(), work: Vec::new() };
        write(&p);
        assert_eq!(Progress::live(&root), Some(p.clone()));
        write(&Progress { started: started + 1, ..p.clone() });
        assert_eq!(Progress::live(&root), None, "a reused pid taken for the run");
        write(&Progress { boot_id: "another-boot".into(), ..p.clone() });
        assert_eq!(Progress::live(&root), None, "a file from another boot");
        write(&p);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(Progress::live(&root), None, "a dead run's file");
    }
}
