//! Killing `node-init run` as a power cut does, at moments read from its
//! own progress rather than from a clock: a reference run's log lines,
//! each with when it came, are the markers; a moment is "this long after
//! the N-th line, and no later than the next". However much slower or
//! faster the machine is than during the reference, the kill lands in the
//! same step of the run, where a fixed wall-clock guess falls past its
//! end.
//!
//! The kill takes the whole process group (node-init, apt, dpkg and the
//! maintainer scripts, kubeadm), frozen first so what ran can be named, and
//! any process left chrooted into the root, as a power cut leaves nothing
//! running.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A run's log lines with when each came, from the spawn.
pub struct Timeline {
    pub lines: Vec<(Duration, String)>,
    pub took: Duration,
}

/// A kill moment: `delay` after the `after`-th log line (0: the spawn), but
/// no later than the line after it, so a run faster than the reference is
/// still killed in the same step.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub after: usize,
    pub delay: Duration,
}

/// What one kill hit.
#[derive(Debug, Default)]
pub struct Kill {
    /// node-init was still running when the kill came.
    pub landed: bool,
    /// The stage its log was in at that moment.
    pub stage: Option<String>,
    /// The command lines of every process in the root at the kill.
    pub inside: Vec<String>,
    /// The lines node-init logged before the kill.
    pub seen: Vec<String>,
}

impl Kill {
    /// Whether a process whose argv starts with `program` (a path or a
    /// name) was killed.
    pub fn hit(&self, program: &str) -> bool {
        self.inside.iter().any(|c| {
            let mut argv = c.split(' ');
            let name = |a: &str| a.rsplit('/').next().unwrap_or(a).to_owned();
            let first = argv.next().map(name);
            // `sh /usr/local/bin/kubeadm`: a script's interpreter first.
            first.as_deref() == Some(program)
                || (first.as_deref() == Some("sh") && argv.next().map(name).as_deref() == Some(program))
        })
    }
}

/// Starts `cmd` in its own process group with its stderr read line by
/// line; the lines arrive on the channel with their time since the spawn.
fn spawn(cmd: &mut Command) -> (std::process::Child, mpsc::Receiver<(Duration, String)>, Instant) {
    cmd.process_group(0).stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("starting node-init");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send((started.elapsed(), line)).is_err() {
                break;
            }
        }
    });
    (child, rx, started)
}

/// Runs `cmd` to its end and keeps its timeline.
pub fn run_to_end(cmd: &mut Command) -> (Timeline, ExitStatus) {
    let (mut child, rx, started) = spawn(cmd);
    let lines: Vec<_> = rx.iter().collect();
    let status = child.wait().expect("waiting for node-init");
    (Timeline { lines, took: started.elapsed() }, status)
}

impl Timeline {
    /// `n` moments spread evenly over the whole run.
    pub fn moments(&self, n: u32) -> Vec<Moment> {
        self.spread(Duration::ZERO, self.took, n)
    }

    /// `n` moments spread evenly over `stage`: from its first log line to
    /// the line after its last.
    pub fn moments_in(&self, stage: &str, n: u32) -> Vec<Moment> {
        let ours: Vec<usize> = (0..self.lines.len()).filter(|i| stage_of(&self.lines[*i].1) == Some(stage)).collect();
        let (Some(first), Some(last)) = (ours.first(), ours.last()) else {
            panic!("the reference run never logged in stage {stage}:\n{}", self.text())
        };
        let end = self.lines.get(last + 1).map_or(self.took, |(t, _)| *t);
        self.spread(self.lines[*first].0, end, n)
    }

    /// `n` moments spread evenly from the first line holding `needle` to
    /// the next line: inside the step it announces.
    pub fn moments_during(&self, needle: &str, n: u32) -> Vec<Moment> {
        let i = self.find(needle);
        let end = self.lines.get(i + 1).map_or(self.took, |(t, _)| *t);
        self.spread(self.lines[i].0, end, n)
    }

    /// Right after the first line holding `needle`.
    pub fn right_after(&self, needle: &str) -> Moment {
        Moment { after: self.find(needle) + 1, delay: Duration::ZERO }
    }

    fn find(&self, needle: &str) -> usize {
        let i = self.lines.iter().position(|(_, l)| l.contains(needle));
        i.unwrap_or_else(|| panic!("the reference run never logged {needle:?}:\n{}", self.text()))
    }

    fn spread(&self, from: Duration, to: Duration, n: u32) -> Vec<Moment> {
        (0..n).map(|i| self.at(from + (to - from).mul_f64((f64::from(i) + 0.5) / f64::from(n)))).collect()
    }

    /// `at` as the last line before it and the time since that line.
    fn at(&self, at: Duration) -> Moment {
        let after = self.lines.iter().take_while(|(t, _)| *t <= at).count();
        let since = if after == 0 { Duration::ZERO } else { self.lines[after - 1].0 };
        Moment { after, delay: at - since }
    }

    pub fn text(&self) -> String {
        self.lines.iter().map(|(t, l)| format!("{:>8.3} {l}\n", t.as_secs_f64())).collect()
    }
}

/// The stage a log line was written in (`stage{stage="patch"}: ...`).
pub fn stage_of(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("stage{stage=\"")?;
    rest.split_once('"').map(|(s, _)| s)
}

/// Runs `cmd`, whose commands run chrooted into `root`, and kills it at
/// `m`: the whole process group, frozen first, and whatever else runs in
/// the root. Returns once nothing runs there any more.
pub fn kill_at(cmd: &mut Command, root: &Path, m: Moment) -> Kill {
    let (mut child, rx, _) = spawn(cmd);
    let mut seen = Vec::new();
    while seen.len() < m.after {
        match rx.recv() {
            Ok((_, line)) => seen.push(line),
            Err(_) => break,
        }
    }
    if let Ok((_, line)) = rx.recv_timeout(m.delay) {
        seen.push(line);
    }
    let mut k = Kill { landed: child.try_wait().expect("polling node-init").is_none(), ..Kill::default() };
    let group = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    if k.landed {
        let _ = killpg(group, Signal::SIGSTOP);
        k.inside = in_root(root).into_iter().map(|(_, argv)| argv).collect();
        let _ = killpg(group, Signal::SIGKILL);
    }
    let _ = child.wait();
    settle(root);
    // Every line was written before the kill: the last stage named is the
    // one it interrupted.
    seen.extend(rx.iter().map(|(_, l)| l));
    k.stage = seen.iter().rev().find_map(|l| stage_of(l)).map(str::to_owned);
    k.seen = seen;
    k
}

/// Kills whatever still runs chrooted into `root` (a process that left
/// the group) and waits until nothing does.
fn settle(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = in_root(root);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running in {} after the kill: {left:?}", root.display());
        for (pid, _) in left {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every process whose root directory is `root`, with its command line.
fn in_root(root: &Path) -> Vec<(Pid, String)> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let dir = PathBuf::from("/proc").join(pid.to_string());
            (std::fs::read_link(dir.join("root")).ok()? == root).then_some(())?;
            let argv = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let argv = String::from_utf8_lossy(&argv).trim_end_matches('\0').replace('\0', " ");
            Some((Pid::from_raw(pid), argv))
        })
        .collect()
}
