//! The stage contract: what a first-boot stage is ([`Stage`]), what it may
//! touch ([`Context`]), what it reports ([`Outcome`]) and what its work
//! depends on ([`Fingerprint`]). Stages import this; the loop that runs
//! them (`crate::pipeline`) sits above and only calls the trait.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use async_trait::async_trait;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::ahead::Ahead;
use crate::config::Config;
use crate::node::Node;
use crate::root::{Change, Root};
use crate::runner::{Cmd, Output, Runner};

/// What a stage did, beyond its status, for `status` and the state file:
/// files written, packages upgraded, the address the FQDN resolved to.
pub type Details = serde_json::Map<String, serde_json::Value>;

/// A finished stage's report: the one line an operator reads first, and
/// the details behind it.
#[derive(Debug, Default, Clone)]
pub struct Done {
    pub summary: Option<String>,
    pub details: Details,
}

impl Done {
    pub fn new(details: Details) -> Self {
        Self { summary: None, details }
    }

    pub fn summary(mut self, line: impl Into<String>) -> Self {
        self.summary = Some(line.into());
        self
    }
}

#[derive(Debug)]
pub enum Outcome {
    Done(Done),
    /// Nothing to do for this config, and why.
    Skipped(String),
    /// Done, but the node must reboot before the next stage.
    RebootRequired {
        reason: String,
        done: Done,
    },
}

#[async_trait]
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;

    /// Adds what the stage's work depends on. A settled stage whose
    /// fingerprint changed runs again.
    fn inputs(&self, config: &Config, f: &mut Fingerprint);

    async fn run(&self, cx: &Context<'_>) -> Result<Outcome>;

    /// Whether later stages' ahead work ([`Ahead`]) may run beside this
    /// stage: it needs nothing of theirs, nor they of it.
    fn overlaps(&self) -> bool {
        false
    }

    /// The [`Ahead`] slots this stage fills before its turn, for `config`.
    fn ahead_slots(&self, _config: &Config) -> &'static [&'static str] {
        &[]
    }

    /// This stage's work ahead of its turn, filling its slots; it may
    /// need only the stages before the first one that [`Stage::overlaps`].
    async fn ahead(&self, _cx: &Context<'_>, _ahead: &Ahead) {}
}

/// A stage's inputs as a value made for comparison: each named field's
/// exact text, and each secret as an HMAC under the node's own key, so the
/// state file (readable by all) never holds a secret or a hash that could
/// be guessed against, yet a rotated password still changes it.
pub struct Fingerprint {
    key: Vec<u8>,
    hash: Sha256,
}

impl Fingerprint {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec(), hash: Sha256::new() }
    }

    /// A value that is not secret, by its name.
    pub fn add(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        self.field(name, value.to_string().as_bytes())
    }

    /// A secret, entered as a keyed hash, never as itself.
    pub fn secret(&mut self, name: &str, value: &str) -> &mut Self {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        self.field(name, &tag)
    }

    /// Length-prefixed, so no two different field lists hash the same.
    fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.hash.update((part.len() as u64).to_le_bytes());
            self.hash.update(part);
        }
        self
    }

    pub fn finish(self) -> String {
        hex::encode(self.hash.finalize())
    }
}

/// What a stage may touch: the root, the node's facts, the config, the
/// runner, and whether this is a dry run (then writes and commands are
/// planned, not done).
pub struct Context<'a> {
    pub root: &'a Root,
    pub node: &'a Node,
    pub config: &'a Config,
    pub runner: &'a dyn Runner,
    pub dry_run: bool,
    plan: Mutex<Vec<String>>,
    ahead: Mutex<Option<Arc<Ahead>>>,
}

impl<'a> Context<'a> {
    pub fn new(root: &'a Root, node: &'a Node, config: &'a Config, runner: &'a dyn Runner, dry_run: bool) -> Self {
        Self { root, node, config, runner, dry_run, plan: Mutex::new(Vec::new()), ahead: Mutex::new(None) }
    }

    /// This run's work ahead of its turn, when the run overlaps.
    pub fn ahead(&self) -> Option<Arc<Ahead>> {
        self.ahead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn set_ahead(&self, ahead: Option<Arc<Ahead>>) {
        *self.ahead.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ahead;
    }

    /// Adds a line to a dry run's plan.
    pub(crate) fn note(&self, line: String) {
        self.plan.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
    }

    /// What a dry run would have changed, one line each.
    pub fn plan(&self) -> Vec<String> {
        self.plan.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
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

    /// Makes `path` a symbolic link to `target` (or, in a dry run, says it
    /// would): how a unit is masked without asking a running systemd.
    pub fn symlink(&self, path: &str, target: &str) -> Result<Change> {
        if !self.dry_run {
            let change = self.root.symlink(path, target)?;
            if change != Change::Unchanged {
                tracing::info!(path, target, "linked");
            }
            return Ok(change);
        }
        let link = std::path::Path::new(path);
        let here = match (link.parent(), link.file_name()) {
            (Some(dir), Some(name)) => self.root.path(dir).join(name),
            _ => self.root.path(path),
        };
        if std::fs::read_link(&here).is_ok_and(|t| t == std::path::Path::new(target)) {
            return Ok(Change::Unchanged);
        }
        self.note(format!("would link {path} -> {target}"));
        Ok(if std::fs::symlink_metadata(&here).is_ok() { Change::Updated } else { Change::Created })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn print(key: &[u8], pw: &str, domain: &str) -> String {
        let mut f = Fingerprint::new(key);
        f.add("domain", domain).secret("proxy.http", pw);
        f.finish()
    }

    #[test]
    fn a_rotated_secret_changes_the_fingerprint_and_never_appears_in_it() {
        let key = b"node key";
        assert_eq!(print(key, "http://u:one@p:3128", "maas"), print(key, "http://u:one@p:3128", "maas"));
        assert_ne!(print(key, "http://u:one@p:3128", "maas"), print(key, "http://u:two@p:3128", "maas"));
        assert_ne!(print(key, "x", "maas"), print(key, "x", "lab"));
        // Without the node's key, the same password gives another value.
        assert_ne!(print(key, "http://u:one@p:3128", "maas"), print(b"other", "http://u:one@p:3128", "maas"));
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        let mut a = Fingerprint::new(b"k");
        a.add("a", "bc");
        let mut b = Fingerprint::new(b"k");
        b.add("ab", "c");
        assert_ne!(a.finish(), b.finish());
    }
}
