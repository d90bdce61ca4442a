//! `node-init status`: the state file, as a table or as JSON, and while a
//! run lives, its work ahead of its turn ([`Progress`]).

use std::path::PathBuf;

use anyhow::Result;

use super::Format;
use serde_json::json;

use crate::root::Root;
use crate::stages;
use crate::stages::ahead::progress::Progress;
use crate::state::{self, StageRecord, State};

#[derive(Debug, clap::Args)]
/// Show each stage: status, when, how long, attempts, last error; and a
/// live run's work ahead of its turn.
pub struct Args {
    /// Read the state of a mounted image or chroot.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

pub fn run(a: Args) -> Result<u8> {
    let root = super::root_arg(a.root.as_deref())?;
    let st = State::load(&root)?;
    let text = match a.output {
        Format::Json => {
            let mut v = as_json(&root, &st);
            // Shown to the operator, never in what a failure tells MAAS:
            // nothing ahead of its turn writes an event.
            if let Some(p) = Progress::live(&root) {
                v["ahead"] = serde_json::to_value(p)?;
            }
            serde_json::to_string_pretty(&v)? + "\n"
        }
        Format::Table => table(&root, &st),
    };
    super::print(&text)?;
    Ok(super::exit::OK)
}

/// Stage names in pipeline order, then any recorded stage no longer in the
/// table (from an older binary).
fn ordered(st: &State) -> Vec<String> {
    let mut names: Vec<String> = stages::TABLE.iter().map(|s| s.name().to_owned()).collect();
    names.extend(st.stages.keys().filter(|k| !names.contains(k)).cloned().collect::<Vec<_>>());
    names
}

/// `status --output json`; also attached to a failure reported to MAAS.
pub(crate) fn as_json(root: &Root, st: &State) -> serde_json::Value {
    let stages: Vec<_> = ordered(st)
        .into_iter()
        .map(|name| match st.stages.get(&name) {
            Some(rec) => {
                let mut v = serde_json::to_value(rec).unwrap_or_default();
                v["name"] = name.into();
                v
            }
            None => json!({"name": name, "status": "pending", "attempts": 0}),
        })
        .collect();
    let mut v = json!({"done": root.exists(state::DONE_PATH), "stages": stages, "reboots": st.reboots});
    if !st.maas.is_empty() {
        v["maas"] = st.maas.report();
    }
    v
}

/// The error, else what the stage reported (its summary or why it was
/// skipped or rebooted), plus the boot it rebooted out of.
fn detail(r: &StageRecord) -> String {
    if let Some(e) = &r.last_error {
        return e.clone();
    }
    let said = r.summary.clone().or_else(|| r.reason.clone());
    let rebooted = r.rebooted_from_boot.as_ref().map(|b| format!("rebooted out of boot {b}"));
    [said, rebooted].into_iter().flatten().collect::<Vec<_>>().join("; ")
}

/// The live run's work ahead of its turn, one line per piece of work.
fn ahead(p: &Progress) -> String {
    let mut out = format!("ahead of its turn (run pid {}):\n", p.pid);
    let width = p.work.iter().map(|w| w.name.len()).max().unwrap_or(0);
    for w in &p.work {
        let state = w.state.lines().next().unwrap_or_default();
        let since = if w.since.is_empty() { "-" } else { &w.since };
        let progress = if w.progress.is_empty() { String::new() } else { format!(": {}", w.progress) };
        out.push_str(&format!("  {:<width$}  {since}  {state}{progress}\n", w.name));
    }
    out
}

fn table(root: &Root, st: &State) -> String {
    let mut rows = vec![["STAGE", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "DETAIL"].map(String::from)];
    for name in ordered(st) {
        let row = match st.stages.get(&name) {
            Some(r) => [
                name,
                r.status.as_str().to_owned(),
                r.attempts.to_string(),
                r.started.clone(),
                r.duration_ms.map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                detail(r),
            ],
            None => [name, "pending".into(), "0".into(), "-".into(), "-".into(), String::new()],
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[i]));
        }
        out.push_str(r[5].lines().next().unwrap_or_default());
        out.push('\n');
    }
    for rb in &st.reboots {
        out.push_str(&format!("reboot: {} from boot {} at {} ({})\n", rb.stage, rb.boot_id, rb.at, rb.reason));
    }
    if let Some(p) = Progress::live(root) {
        out.push_str(&ahead(&p));
    }
    if !st.maas.is_empty() {
        out.push_str(&st.maas.table());
    }
    let done = if root.exists(state::DONE_PATH) { "done" } else { "not done" };
    out.push_str(&format!("node-init: {done}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::ahead::progress::WorkProgress;

    #[test]
    fn the_work_ahead_is_one_aligned_line_each_with_its_progress() {
        let at = "2026-11-22T04:05:25Z";
        let w = |name: &str, state: &str, progress: &str| WorkProgress {
            name: name.into(),
            state: state.into(),
            since: at.into(),
            progress: progress.into(),
        };
        let p = Progress {
            pid: 812,
            started: 0,
            boot_id: String::new(),
            work: vec![
                w("dns", "done", ""),
                w(
                    "discovery",
                    "failed: GET https://10.0.0.10:6443/api/v1/namespaces/kube-public/configmaps/cluster-info: refused\nsecond line",
                    "",
                ),
                w("images", "running", "5/8 in containerd; pulling etcd:3.5.15-0, kube-vip:v0.8.10"),
                WorkProgress { name: "extra".into(), state: "waiting".into(), ..Default::default() },
            ],
        };
        assert_eq!(
            ahead(&p),
            "ahead of its turn (run pid 812):\n\
             \x20 dns        2026-11-22T04:05:25Z  done\n\
             \x20 discovery  2026-11-22T04:05:25Z  failed: GET https://10.0.0.10:6443/api/v1/namespaces/kube-public/configmaps/cluster-info: refused\n\
             \x20 images     2026-11-22T04:05:25Z  running: 5/8 in containerd; pulling etcd:3.5.15-0, kube-vip:v0.8.10\n\
             \x20 extra      -  waiting\n"
        );
    }
}
