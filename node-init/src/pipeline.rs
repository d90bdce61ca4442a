//! The first-boot pipeline: the `Stage` trait and the loop that runs the
//! table in [`crate::stages`] against the state file.
//!
//! Contract: each stage is idempotent; its record is saved before it starts
//! (`running`) and after it ends. A run resumes at the first stage that is
//! not settled (done or skipped with the same inputs). A stage that needs a
//! reboot is recorded with the boot id first; in a later boot it counts as
//! done, so one patch never reboots twice, and a loop guard refuses a
//! fourth reboot. `--root` and `--no-reboot` never reboot: exit 3.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::config::Config;
use crate::exit;
use crate::root::{Change, Root};
use crate::runner::{Cmd, Output, Runner};
use crate::state::{self, RebootRecord, StageRecord, State, Status};

/// More reboots than this in one pipeline is a loop, not a patch.
pub const MAX_REBOOTS: usize = 3;

pub type Facts = serde_json::Map<String, serde_json::Value>;

#[derive(Debug)]
pub enum Outcome {
    Done(Facts),
    /// Nothing to do for this config, and why.
    Skipped(String),
    /// Done, but the node must reboot before the next stage.
    RebootRequired {
        reason: String,
        facts: Facts,
    },
}

#[async_trait]
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;

    /// What the stage's work depends on, as text (secrets print redacted).
    /// A settled stage whose inputs changed runs again.
    fn inputs(&self, config: &Config) -> String;

    async fn run(&self, cx: &Context<'_>) -> Result<Outcome>;
}

/// What a stage may touch: the root, the config, the runner, and whether
/// this is a dry run (then writes and commands are planned, not done).
pub struct Context<'a> {
    pub root: &'a Root,
    pub node: Node,
    pub config: &'a Config,
    pub runner: &'a dyn Runner,
    pub boot_id: String,
    pub dry_run: bool,
    plan: Mutex<Vec<String>>,
}

impl<'a> Context<'a> {
    pub fn new(root: &'a Root, config: &'a Config, runner: &'a dyn Runner, dry_run: bool) -> Result<Self> {
        Ok(Self {
            root,
            node: Node::default(),
            config,
            runner,
            boot_id: state::boot_id(root)?,
            dry_run,
            plan: Mutex::new(Vec::new()),
        })
    }

    fn note(&self, line: String) {
        self.plan.lock().expect("plan lock").push(line);
    }

    /// What a dry run would have changed, one line each.
    pub fn plan(&self) -> Vec<String> {
        self.plan.lock().expect("plan lock").clone()
    }

    /// Writes a file atomically (or, in a dry run, says it would).
    pub fn write(&self, path: &str, content: &[u8], mode: u32) -> Result<Change> {
        if !self.dry_run {
            let change = self.root.write(path, content, mode)?;
            if change != Change::Unchanged {
                tracing::info!(path, ?change, "wrote");
            }
            return Ok(change);
        }
        let change = match self.root.read_opt(path)? {
            None => Change::Created,
            Some(old) if old == content => Change::Unchanged,
            Some(_) => Change::Updated,
        };
        if change != Change::Unchanged {
            self.note(format!(
                "would {} {path} (mode {mode:o})",
                if change == Change::Created { "create" } else { "update" }
            ));
        }
        Ok(change)
    }

    /// Removes a file (or, in a dry run, says it would).
    pub fn remove(&self, path: &str) -> Result<Change> {
        if !self.dry_run {
            let change = self.root.remove(path)?;
            if change == Change::Removed {
                tracing::info!(path, "removed");
            }
            return Ok(change);
        }
        if self.root.exists(path) {
            self.note(format!("would remove {path}"));
            return Ok(Change::Removed);
        }
        Ok(Change::Unchanged)
    }

    /// Runs a command that changes the system; `None` in a dry run.
    pub async fn exec(&self, cmd: &Cmd) -> Result<Option<Output>> {
        if self.dry_run {
            self.note(format!("would run {cmd}"));
            return Ok(None);
        }
        Ok(Some(self.runner.run(cmd).await?))
    }
}

/// Facts about the node the stages act for, gathered once by the caller.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub fqdn: Option<String>,
    /// Empty under `--root`: an image has no addresses of its own yet.
    pub addresses: Vec<std::net::IpAddr>,
    /// The MAAS server's host, from cloud-init's MAAS datasource.
    pub maas_server: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub no_reboot: bool,
}

/// Runs the selected stages in table order and returns the exit code.
pub async fn run(stages: &[&dyn Stage], cx: &Context<'_>, opts: &Options) -> Result<u8> {
    let selected = select(stages, opts)?;
    let _lock = if cx.dry_run { None } else { Some(lock(cx.root)?) };
    let mut st = State::load(cx.root)?;
    for stage in selected {
        let span = tracing::info_span!("stage", stage = stage.name());
        let code = run_one(*stage, cx, opts, &mut st).instrument(span).await?;
        if code != exit::OK {
            return Ok(code);
        }
    }
    let all_settled = stages.iter().all(|s| st.stages.get(s.name()).is_some_and(|r| r.status.settled()));
    if all_settled && !cx.dry_run {
        let marker = format!("done in boot {} at {}\n", cx.boot_id, state::now_rfc3339());
        if !cx.root.exists(state::DONE_PATH) {
            cx.root.write(state::DONE_PATH, marker.as_bytes(), 0o644)?;
        }
        tracing::info!("all stages done");
    }
    Ok(exit::OK)
}

fn select<'s>(stages: &'s [&'s dyn Stage], opts: &Options) -> Result<Vec<&'s &'s dyn Stage>> {
    let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
    for n in opts.only.iter().chain(&opts.skip) {
        if !names.contains(&n.as_str()) {
            return Err(
                crate::cli::UsageError(format!("unknown stage {n:?}; the stages are: {}", names.join(", "))).into()
            );
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

fn fingerprint(stage: &dyn Stage, config: &Config) -> String {
    hex::encode(Sha256::digest(stage.inputs(config).as_bytes()))
}

async fn run_one(stage: &dyn Stage, cx: &Context<'_>, opts: &Options, st: &mut State) -> Result<u8> {
    let name = stage.name();
    let inputs = fingerprint(stage, cx.config);
    let prev = st.stages.get(name).cloned();
    if let Some(rec) = &prev {
        if rec.status.settled() && rec.inputs == inputs {
            tracing::debug!("already {}", rec.status.as_str());
            return Ok(exit::OK);
        }
        if rec.status == Status::RebootPending {
            return resume_after_reboot(name, rec.clone(), cx, opts, st).await;
        }
    }
    let started = Instant::now();
    let mut rec = StageRecord {
        status: Status::Running,
        attempts: prev.as_ref().map_or(0, |r| r.attempts) + 1,
        boot_id: cx.boot_id.clone(),
        inputs,
        started: state::now_rfc3339(),
        finished: None,
        duration_ms: None,
        reason: None,
        last_error: None,
        facts: Facts::new(),
    };
    save(cx, st, name, &rec)?;
    tracing::info!(attempt = rec.attempts, "starting");
    let result = stage.run(cx).await;
    rec.finished = Some(state::now_rfc3339());
    rec.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    match result {
        Ok(Outcome::Done(facts)) => {
            rec.status = Status::Done;
            rec.facts = facts;
        }
        Ok(Outcome::Skipped(reason)) => {
            tracing::info!(%reason, "skipped");
            rec.status = Status::Skipped;
            rec.reason = Some(reason);
        }
        Ok(Outcome::RebootRequired { reason, facts }) => {
            rec.facts = facts;
            return request_reboot(name, rec, reason, cx, opts, st).await;
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!(error = %msg, "failed");
            rec.status = Status::Failed;
            rec.last_error = Some(msg);
            save(cx, st, name, &rec)?;
            return Ok(exit::FAILED);
        }
    }
    tracing::info!(duration_ms = rec.duration_ms, "{}", rec.status.as_str());
    save(cx, st, name, &rec)?;
    Ok(exit::OK)
}

fn save(cx: &Context<'_>, st: &mut State, name: &str, rec: &StageRecord) -> Result<()> {
    st.stages.insert(name.to_owned(), rec.clone());
    if cx.dry_run { Ok(()) } else { st.save(cx.root) }
}

async fn request_reboot(
    name: &str,
    mut rec: StageRecord,
    reason: String,
    cx: &Context<'_>,
    opts: &Options,
    st: &mut State,
) -> Result<u8> {
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
        return Ok(exit::FAILED);
    }
    rec.status = Status::RebootPending;
    rec.reason = Some(reason.clone());
    st.reboots.push(RebootRecord {
        stage: name.to_owned(),
        boot_id: cx.boot_id.clone(),
        at: state::now_rfc3339(),
        reason: reason.clone(),
    });
    save(cx, st, name, &rec)?;
    reboot_or_exit(&reason, cx, opts).await
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
) -> Result<u8> {
    let reason = rec.reason.clone().unwrap_or_default();
    if rec.boot_id != cx.boot_id {
        tracing::info!(from_boot = %rec.boot_id, "resumed after reboot");
        rec.facts.insert("rebooted_from_boot".into(), rec.boot_id.clone().into());
        rec.status = Status::Done;
        rec.finished.get_or_insert_with(state::now_rfc3339);
        save(cx, st, name, &rec)?;
        return Ok(exit::OK);
    }
    reboot_or_exit(&reason, cx, opts).await
}

async fn reboot_or_exit(reason: &str, cx: &Context<'_>, opts: &Options) -> Result<u8> {
    if !cx.root.is_host() || opts.no_reboot || cx.dry_run {
        tracing::warn!(%reason, "a reboot is required and was not performed; rerun node-init after rebooting");
        return Ok(exit::REBOOT_REQUIRED);
    }
    tracing::warn!(%reason, "rebooting");
    let cmd = Cmd::new(["systemctl", "reboot"], Duration::from_secs(60));
    match cx.runner.run(&cmd).await.and_then(|o| o.check(&cmd)) {
        Ok(_) => Ok(exit::REBOOT_REQUIRED),
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
