//! `node-init verify`: the read-only preflight.

use std::path::PathBuf;

use anyhow::Result;

use super::Format;
use serde_json::json;

use crate::checks::{self, Facts, Report, Status};
use crate::config::{self, values::Dur};
use crate::exit;

#[derive(Debug, clap::Args)]
/// Run the preflight checks, read-only, all at once under one deadline.
pub struct Args {
    /// Config file (default /etc/node-init/config.yaml, else the node_init
    /// key of cloud-init user data, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
    /// Deadline for all checks together.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: Dur,
}

pub async fn run(a: Args) -> Result<u8> {
    let root = crate::root::Root::host();
    let loaded = config::load(&root, a.config.as_deref())?;
    let facts = Facts::gather(&root, &loaded.config, a.timeout.0)?;
    let reports = checks::run_all(&facts, a.timeout.0).await;
    let text = match a.output {
        Format::Json => serde_json::to_string_pretty(&as_json(&reports))? + "\n",
        Format::Table => table(&reports),
    };
    super::print(&text)?;
    Ok(if reports.iter().any(|r| r.status == Status::Fail) { exit::FAILED } else { exit::OK })
}

fn count(reports: &[Report], s: Status) -> usize {
    reports.iter().filter(|r| r.status == s).count()
}

fn as_json(reports: &[Report]) -> serde_json::Value {
    json!({
        "checks": reports,
        "summary": {"pass": count(reports, Status::Pass), "fail": count(reports, Status::Fail), "skip": count(reports, Status::Skip)},
    })
}

fn table(reports: &[Report]) -> String {
    let w = reports.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in reports {
        let st = match r.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        out.push_str(&format!("{:<w$}  {st}  {:>6}ms  {}\n", r.name, r.duration_ms, r.reason));
    }
    let (p, f, s) = (count(reports, Status::Pass), count(reports, Status::Fail), count(reports, Status::Skip));
    out.push_str(&format!("summary: {p} pass, {f} fail, {s} skip\n"));
    out
}
