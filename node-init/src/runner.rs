//! `Runner`: the one way node-init starts an external command.
//!
//! A command is an argv, never a shell string, and always has a deadline.
//! Under `--root DIR` it runs as `chroot DIR argv...`, so the image's own
//! tools act on the image. Commands get a fixed, minimal environment (plus
//! what the caller adds), so a run does not depend on the caller's shell.
//! Tests swap in [`Recording`], which keeps every argv and answers from a
//! script.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;

pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

impl Cmd {
    pub fn new<I, S>(argv: I, timeout: Duration) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { argv: argv.into_iter().map(Into::into).collect(), env: Vec::new(), timeout }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv.join(" "))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit code; `None` when a signal ended the command.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Fails with the argv, the exit status and the end of stderr unless the
    /// command succeeded.
    pub fn check(self, cmd: &Cmd) -> Result<Self> {
        if self.success() {
            return Ok(self);
        }
        let status = self.code.map_or_else(|| "was killed by a signal".to_owned(), |c| format!("exited with {c}"));
        bail!("`{cmd}` {status}: {}", tail(&self.stderr, 20))
    }
}

/// The last `lines` lines of a command's output, trimmed, for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let from = all.len().saturating_sub(lines);
    let t = all[from..].join("\n");
    if t.is_empty() { "(no output)".to_owned() } else { t }
}

#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion or to its deadline. A non-zero exit is an
    /// `Ok` output; failing to start it or missing the deadline is an error.
    async fn run(&self, cmd: &Cmd) -> Result<Output>;
}

/// Runs commands on the host, or in a chroot of `root`.
#[derive(Debug, Clone, Default)]
pub struct HostRunner {
    chroot: Option<PathBuf>,
}

impl HostRunner {
    pub fn new(chroot: Option<PathBuf>) -> Self {
        Self { chroot }
    }
}

#[async_trait]
impl Runner for HostRunner {
    async fn run(&self, cmd: &Cmd) -> Result<Output> {
        let mut argv: Vec<String> = Vec::new();
        if let Some(dir) = &self.chroot {
            argv.push("chroot".into());
            argv.push(dir.to_string_lossy().into_owned());
        }
        argv.extend(cmd.argv.iter().cloned());
        let (program, args) = argv.split_first().context("a command has a program")?;
        let mut c = tokio::process::Command::new(program);
        c.args(args)
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tracing::debug!(command = %cmd, "running");
        let child = c.spawn().with_context(|| format!("starting `{cmd}`"))?;
        let out = tokio::time::timeout(cmd.timeout, child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("`{cmd}` did not finish within {}", humantime::format_duration(cmd.timeout)))?
            .with_context(|| format!("waiting for `{cmd}`"))?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A runner for tests: records every command and answers from a queue of
/// scripted outputs (success with no output once the queue is empty).
#[derive(Debug, Default)]
pub struct Recording {
    calls: Mutex<Vec<Cmd>>,
    answers: Mutex<VecDeque<Output>>,
}

impl Recording {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues the output of the next command run.
    pub fn answer(&self, code: i32, stdout: &str, stderr: &str) {
        let out = Output { code: Some(code), stdout: stdout.into(), stderr: stderr.into() };
        self.answers.lock().expect("answers lock").push_back(out);
    }

    pub fn calls(&self) -> Vec<Cmd> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// The argv of every call, each joined by spaces.
    pub fn argvs(&self) -> Vec<String> {
        self.calls().iter().map(ToString::to_string).collect()
    }
}

#[async_trait]
impl Runner for Recording {
    async fn run(&self, cmd: &Cmd) -> Result<Output> {
        self.calls.lock().expect("calls lock").push(cmd.clone());
        let next = self.answers.lock().expect("answers lock").pop_front();
        Ok(next.unwrap_or_else(|| Output { code: Some(0), ..Output::default() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn failure_carries_argv_and_stderr() {
        let cmd = Cmd::new(["sh", "-c", "echo boom >&2; exit 3"], Duration::from_secs(10));
        let out = rt().block_on(HostRunner::default().run(&cmd)).unwrap();
        assert_eq!(out.code, Some(3));
        let err = out.check(&cmd).unwrap_err().to_string();
        assert!(err.contains("`sh -c echo boom >&2; exit 3` exited with 3: boom"), "{err}");
    }

    #[test]
    fn deadline_kills_the_command() {
        let cmd = Cmd::new(["sleep", "30"], Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = rt().block_on(HostRunner::default().run(&cmd)).unwrap_err().to_string();
        assert!(err.contains("did not finish within 200ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn environment_is_minimal() {
        let cmd = Cmd::new(["env"], Duration::from_secs(10)).env("X", "1");
        let out = rt().block_on(HostRunner::default().run(&cmd)).unwrap();
        let mut vars: Vec<&str> = out.stdout.lines().collect();
        vars.sort_unstable();
        assert_eq!(vars, ["LANG=C.UTF-8", &format!("PATH={PATH}"), "X=1"]);
    }
}
