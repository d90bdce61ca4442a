//! `node-init verify`: the read-only preflight.

use std::path::PathBuf;

use anyhow::Result;

use super::Format;
use serde_json::json;

use super::exit;
use crate::checks::{self, Inputs, Report, Status};
use crate::config::{self, values::Dur};
use crate::node::Node;

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
    let node = Node::gather(&root, &loaded.config)?;
    let runner = crate::runner::HostRunner::new(None);
    let inputs = Inputs::new(&root, &loaded.config, &node, &runner, a.timeout.0);
    let reports = checks::run_all(&inputs, a.timeout.0).await;
    let text = match a.output {
        Format::Json => serde_json::to_string_pretty(&as_json(&reports))? + "\n",
        Format::Table => table(&reports),
    };
    super::print(&text)?;
    let bad = reports.iter().any(|r| matches!(r.status, Status::Fail | Status::Error));
    Ok(if bad { exit::FAILED } else { exit::OK })
}

fn count(reports: &[Report], s: Status) -> usize {
    reports.iter().filter(|r| r.status == s).count()
}

fn as_json(reports: &[Report]) -> serde_json::Value {
    let summary: serde_json::Map<String, serde_json::Value> =
        Status::ALL.iter().map(|s| (s.as_str().to_owned(), count(reports, *s).into())).collect();
    json!({"checks": reports, "summary": summary})
}

fn table(reports: &[Report]) -> String {
    let w = reports.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in reports {
        let st = r.status.as_str().to_ascii_uppercase();
        out.push_str(&format!("{:<w$}  {st:<5}  {:>6}ms  {}\n", r.name, r.duration_ms, r.reason));
    }
    let counts: Vec<String> = Status::ALL.iter().map(|s| format!("{} {}", count(reports, *s), s.as_str())).collect();
    out.push_str(&format!("summary: {}\n", counts.join(", ")));
    out
}
