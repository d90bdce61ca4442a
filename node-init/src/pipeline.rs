//! The loop that runs the stage table ([`crate::stages`]) against the
//! state file, and returns what happened; the CLI turns that into an exit
//! code.
//!
//! Contract: each stage is idempotent; its record is saved before it starts
//! (`running`) and after it ends. A run resumes at the first stage that is
//! not settled (done or skipped with the same inputs). A stage that needs a
//! reboot is recorded with the boot id first; in a later boot it counts as
//! done, so one patch never reboots twice, and a loop guard refuses a
//! fourth reboot. `--root` and `--no-reboot` never reboot.
//!
//! In an overlapped run (`run.parallel`, the default), later stages' work
//! that needs no package lock starts beside the first stage that allows it
//! (the patch), and each stage takes that work's success at its own turn
//! ([`crate::stages::ahead`]); the records, the events and the state keep
//! the table's order.
//!
//! With a [`Reporter`], every transition (a stage starting or ending, a
//! reboot, the end of the whole run) is also reported to MAAS after it is
//! recorded; reporting is bounded and never changes how the run ends.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::future::join_all;
use tracing::Instrument;

use crate::error::UsageError;
use crate::maas::events::{Reporter, Transition};
use crate::root::Root;
use crate::runner::Cmd;
use crate::stages::{Ahead, Context, Done, Fingerprint, Outcome, Stage};
use crate::state::{self, RebootRecord, StageRecord, State, Status};

/// More reboots than this in one pipeline is a loop, not a patch.
pub const MAX_REBOOTS: usize = 3;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every selected stage is settled.
    Done,
    /// A stage failed; its record holds the error.
    Failed,
    /// A stage needs a reboot that this run may not do (`--root`,
    /// `--no-reboot`, a dry run), or one that was asked of systemd.
    RebootRequired,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub no_reboot: bool,
}

/// Runs the selected stages in table order.
pub async fn run(stages: &[&dyn Stage], cx: &Context<'_>, opts: &Options) -> Result<End> {
    run_reported(stages, cx, opts, None).await
}

/// [`run`], reporting each transition with `report` (never in a dry run).
pub async fn run_reported(
    stages: &[&dyn Stage],
    cx: &Context<'_>,
    opts: &Options,
    report: Option<&Reporter>,
) -> Result<End> {
    let selected = select(stages, opts)?;
    let _lock = if cx.dry_run { None } else { Some(lock(cx.root)?) };
    if !cx.dry_run {
        // What a run killed without a reboot showed; this run shows its own.
        crate::stages::ahead::progress::clear(cx.root);
    }
    let report = report.filter(|_| !cx.dry_run);
    let mut st = State::load(cx.root)?;
    let key = fingerprint_key(cx)?;
    let (ahead, early) = plan_ahead(&selected, cx, &key, &st);
    cx.set_ahead(ahead.clone());
    let in_order = in_order(stages, &selected, cx, opts, &key, &mut st, report);
    let end = match &ahead {
        None => in_order.await,
        Some(a) => {
            let work = async {
                join_all(early.iter().map(|s| async move {
                    s.ahead(cx, a).instrument(tracing::info_span!("ahead", stage = s.name())).await;
                    a.abandon(s.ahead_slots(cx.config));
                }))
                .await;
                std::future::pending::<()>().await;
            };
            // The work ahead lives only as long as the run: whatever is
            // still under way when the run ends (a failure, a reboot) stops.
            // It is polled first, so what is ready at once (a result kept
            // before a reboot) is there for a turn that comes right away.
            tokio::select! {
                biased;
                () = work => unreachable!("the work ahead never ends on its own"),
                end = in_order => end,
            }
        }
    };
    cx.set_ahead(None);
    end
}

/// The work ahead of this run, when it overlaps: the slots of every
/// unsettled stage after the first that [`Stage::overlaps`], and those
/// stages. None in a dry run, with `run.parallel: false`, or when nothing
/// is left to do ahead.
fn plan_ahead<'s>(
    selected: &[&'s &'s dyn Stage],
    cx: &Context<'_>,
    key: &[u8],
    st: &State,
) -> (Option<std::sync::Arc<Ahead>>, Vec<&'s dyn Stage>) {
    if cx.dry_run || !cx.config.run.parallel {
        return (None, Vec::new());
    }
    let Some(first) = selected.iter().position(|s| s.overlaps()) else { return (None, Vec::new()) };
    let later: Vec<&dyn Stage> = selected[first + 1..]
        .iter()
        .map(|s| **s)
        .filter(|s| !s.ahead_slots(cx.config).is_empty())
        .filter(|s| !settled(st.stages.get(s.name()), &fingerprint(*s, cx, key)))
        .collect();
    if later.is_empty() {
        return (None, Vec::new());
    }
    let slots: Vec<&'static str> = later.iter().flat_map(|s| s.ahead_slots(cx.config).iter().copied()).collect();
    let ahead = Ahead::new(&slots, st.ahead.clone(), key, &cx.node.boot_id).showing_progress_in(cx.root.clone());
    (Some(std::sync::Arc::new(ahead)), later)
}

/// A record that needs no rerun: settled with the same inputs.
fn settled(rec: Option<&StageRecord>, inputs: &str) -> bool {
    rec.is_some_and(|r| r.status.settled() && r.inputs == inputs)
}

/// The stages one after another, in the table's order; in an overlapped
/// run, the work ahead starts as the first stage that overlaps is reached.
async fn in_order(
    stages: &[&dyn Stage],
    selected: &[&&dyn Stage],
    cx: &Context<'_>,
    opts: &Options,
    key: &[u8],
    st: &mut State,
    report: Option<&Reporter>,
) -> Result<End> {
    for stage in selected.iter().copied() {
        if stage.overlaps()
            && let Some(a) = cx.ahead()
        {
            tracing::info!(stage = stage.name(), "what needs no package lock starts beside this stage");
            a.start();
            // One step for the work ahead: what an earlier run kept (before
            // a reboot) is ready at once, even for a turn that comes now.
            tokio::task::yield_now().await;
        }
        let span = tracing::info_span!("stage", stage = stage.name());
        let end = run_one(*stage, cx, opts, key, st, report).instrument(span).await?;
        if let Some(a) = cx.ahead() {
            // A stage whose turn passed without taking its work (it was
            // skipped) has no use for it any more.
            a.turn_over(stage.ahead_slots(cx.config));
        }
        if end == End::Failed {
            let error = st.stages.get(stage.name()).and_then(|r| r.last_error.clone()).unwrap_or_default();
            tell(cx, st, report, Transition::Failed { stage: stage.name(), error: &error }).await?;
        }
        if end != End::Done {
            return Ok(end);
        }
    }
    let all_settled = stages.iter().all(|s| st.stages.get(s.name()).is_some_and(|r| r.status.settled()));
    if all_settled && !cx.dry_run {
        let marker = format!("done in boot {} at {}\n", cx.node.boot_id, state::now_rfc3339());
        if !cx.root.exists(state::DONE_PATH) {
            cx.root.write(state::DONE_PATH, marker.as_bytes(), 0o644)?;
        }
        tracing::info!("all stages done");
        if !st.ahead.is_empty() {
            // Kept for a later turn that will not come now.
            st.ahead.clear();
            st.save(cx.root)?;
        }
        if st.maas.open {
            let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
            tell(cx, st, report, Transition::Done { stages: &names }).await?;
        }
    }
    if let Some(r) = report {
        // Whatever earlier runs could not deliver, even when nothing ran.
        r.flush(st).await;
        st.save(cx.root)?;
    }
    Ok(End::Done)
}

/// Reports a transition, then saves the state with its outbox.
async fn tell(cx: &Context<'_>, st: &mut State, report: Option<&Reporter>, t: Transition<'_>) -> Result<()> {
    let Some(r) = report else { return Ok(()) };
    r.report(cx.root, st, t).await;
    st.save(cx.root)
}

fn select<'s>(stages: &'s [&'s dyn Stage], opts: &Options) -> Result<Vec<&'s &'s dyn Stage>> {
    let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
    for n in opts.only.iter().chain(&opts.skip) {
        if !names.contains(&n.as_str()) {
            return Err(UsageError(format!("unknown stage {n:?}; the stages are: {}", names.join(", "))).into());
        }
    }
    Ok(stages
        .iter()
        .filter(|s| opts.only.is_empty() || opts.only.iter().any(|n| n == s.name()))
        .filter(|s| !opts.skip.iter().any(|n| n == s.name()))
        .collect())
}

fn lock(root: &Root) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = root.path(state::LOCK_PATH);
    std::fs::create_dir_all(root.path(state::STATE_DIR)).with_context(|| format!("creating {}", state::STATE_DIR))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| anyhow::anyhow!("another node-init run holds {} ({e})", path.display()))
}

/// The node's key for the secrets in stage fingerprints: made once, 0600.
/// A dry run does not create it; without one it compares against a fresh
/// key, so stages with secrets look changed and run (as a plan).
fn fingerprint_key(cx: &Context<'_>) -> Result<Vec<u8>> {
    if let Some(key) = cx.root.read_opt(state::KEY_PATH)?.filter(|k| k.len() == 32) {
        return Ok(key);
    }
    let key = crate::pki::random_bytes::<32>()?.to_vec();
    if !cx.dry_run {
        cx.root.write(state::KEY_PATH, &key, 0o600)?;
    }
    Ok(key)
}

fn fingerprint(stage: &dyn Stage, cx: &Context<'_>, key: &[u8]) -> String {
    let mut f = Fingerprint::new(key);
    stage.inputs(cx.config, &mut f);
    f.finish()
}

async fn run_one(
    stage: &dyn Stage,
    cx: &Context<'_>,
    opts: &Options,
    key: &[u8],
    st: &mut State,
    report: Option<&Reporter>,
) -> Result<End> {
    let name = stage.name();
    let inputs = fingerprint(stage, cx, key);
    let prev = st.stages.get(name).cloned();
    if let Some(rec) = &prev {
        if settled(Some(rec), &inputs) {
            tracing::debug!("already {}", rec.status.as_str());
            return Ok(End::Done);
        }
        if rec.status == Status::RebootPending {
            return resume_after_reboot(name, rec.clone(), cx, opts, st, report).await;
        }
    }
    let mut rec = StageRecord {
        status: Status::Running,
        attempts: prev.as_ref().map_or(0, |r| r.attempts) + 1,
        boot_id: cx.node.boot_id.clone(),
        inputs,
        started: state::now_rfc3339(),
        ..StageRecord::default()
    };
    save(cx, st, name, &rec)?;
    tracing::info!(attempt = rec.attempts, "starting");
    tell(cx, st, report, Transition::StageStarted { stage: name, attempt: rec.attempts }).await?;
    // The stage's own time, not the time spent telling MAAS.
    let started = Instant::now();
    let result = stage.run(cx).await;
    rec.finished = Some(state::now_rfc3339());
    rec.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    match result {
        Ok(Outcome::Done(done)) => {
            rec.status = Status::Done;
            keep(&mut rec, done);
        }
        Ok(Outcome::Skipped(reason)) => {
            tracing::info!(%reason, "skipped");
            rec.status = Status::Skipped;
            rec.reason = Some(reason);
        }
        Ok(Outcome::RebootRequired { reason, done }) => {
            keep(&mut rec, done);
            return request_reboot(name, rec, reason, cx, opts, st, report).await;
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!(error = %msg, "failed");
            rec.status = Status::Failed;
            rec.last_error = Some(msg);
            save(cx, st, name, &rec)?;
            tell(cx, st, report, Transition::StageEnded { stage: name, record: &rec }).await?;
            return Ok(End::Failed);
        }
    }
    tracing::info!(duration_ms = rec.duration_ms, "{}", rec.status.as_str());
    save(cx, st, name, &rec)?;
    tell(cx, st, report, Transition::StageEnded { stage: name, record: &rec }).await?;
    Ok(End::Done)
}

fn keep(rec: &mut StageRecord, done: Done) {
    rec.summary = done.summary;
    rec.details = done.details;
}

fn save(cx: &Context<'_>, st: &mut State, name: &str, rec: &StageRecord) -> Result<()> {
    st.stages.insert(name.to_owned(), rec.clone());
    if let Some(a) = cx.ahead() {
        st.ahead = a.to_keep();
    }
    if cx.dry_run { Ok(()) } else { st.save(cx.root) }
}

async fn request_reboot(
    name: &str,
    mut rec: StageRecord,
    reason: String,
    cx: &Context<'_>,
    opts: &Options,
    st: &mut State,
    report: Option<&Reporter>,
) -> Result<End> {
    if st.reboots.len() >= MAX_REBOOTS {
        let msg = format!(
            "refusing to reboot again: node-init already rebooted this node {} times ({}); \
             find out why {name} keeps asking, then remove {} to start over",
            st.reboots.len(),
            st.reboots.iter().map(|r| format!("{} in boot {}", r.stage, r.boot_id)).collect::<Vec<_>>().join(", "),
            state::STATE_PATH
        );
        tracing::error!(error = %msg, "reboot loop");
        rec.status = Status::Failed;
        rec.last_error = Some(msg);
        save(cx, st, name, &rec)?;
        tell(cx, st, report, Transition::StageEnded { stage: name, record: &rec }).await?;
        return Ok(End::Failed);
    }
    rec.status = Status::RebootPending;
    rec.reason = Some(reason.clone());
    st.reboots.push(RebootRecord {
        stage: name.to_owned(),
        boot_id: cx.node.boot_id.clone(),
        at: state::now_rfc3339(),
        reason: reason.clone(),
    });
    save(cx, st, name, &rec)?;
    reboot_or_stop(name, &reason, cx, opts, st, report).await
}

/// A stage waiting for a reboot: in a new boot it is done; in the same boot
/// the reboot has not happened yet, so ask for it again (once more at most,
/// counted by the loop guard through the records already kept).
async fn resume_after_reboot(
    name: &str,
    mut rec: StageRecord,
    cx: &Context<'_>,
    opts: &Options,
    st: &mut State,
    report: Option<&Reporter>,
) -> Result<End> {
    let reason = rec.reason.clone().unwrap_or_default();
    if rec.boot_id != cx.node.boot_id {
        tracing::info!(from_boot = %rec.boot_id, "resumed after reboot");
        rec.rebooted_from_boot = Some(rec.boot_id.clone());
        rec.status = Status::Done;
        rec.finished.get_or_insert_with(state::now_rfc3339);
        save(cx, st, name, &rec)?;
        tell(cx, st, report, Transition::StageEnded { stage: name, record: &rec }).await?;
        return Ok(End::Done);
    }
    reboot_or_stop(name, &reason, cx, opts, st, report).await
}

/// Reboots, or says why not; either way MAAS hears of it first.
async fn reboot_or_stop(
    name: &str,
    reason: &str,
    cx: &Context<'_>,
    opts: &Options,
    st: &mut State,
    report: Option<&Reporter>,
) -> Result<End> {
    let why_not = if cx.dry_run {
        Some("a dry run")
    } else if !cx.root.is_host() {
        Some("--root")
    } else if opts.no_reboot {
        Some("--no-reboot")
    } else {
        None
    };
    tell(cx, st, report, Transition::Rebooting { stage: name, reason, why_not }).await?;
    if why_not.is_some() {
        tracing::warn!(%reason, "a reboot is required and was not performed; rerun node-init after rebooting");
        return Ok(End::RebootRequired);
    }
    tracing::warn!(%reason, "rebooting");
    let cmd = Cmd::new(["systemctl", "reboot"], Duration::from_secs(60));
    match cx.runner.run(&cmd).await.and_then(|o| o.check(&cmd)) {
        Ok(_) => Ok(End::RebootRequired),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "systemctl reboot failed; rebooting through the reboot system call");
            nix::unistd::sync();
            // Only returns on failure.
            let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT).unwrap_err();
            bail!("rebooting: {e:#}; reboot(2): {err}")
        }
    }
}

#[cfg(test)]
mod tests;
