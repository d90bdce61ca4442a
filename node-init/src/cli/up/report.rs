//! The end of `up`: a table (node, role, system id, address, stage
//! reached, time) or the same as JSON on stdout, and on failure what
//! failed where, in MAAS's or node-init's words, with the two ways on.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::record::{Node, Outcome, Record};

/// Seconds from the deploy to the node's end (or now).
fn seconds(n: &Node) -> Option<u64> {
    let start = humantime::parse_rfc3339(n.deploy_sent.as_deref()?).ok()?;
    let end = match n.finished_at.as_deref() {
        Some(t) => humantime::parse_rfc3339(t).ok()?,
        None => SystemTime::now(),
    };
    end.duration_since(start).ok().map(|d| d.as_secs())
}

fn took(n: &Node) -> String {
    seconds(n).map_or_else(|| "-".into(), |s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
}

fn stage(n: &Node) -> String {
    match n.outcome {
        Outcome::Done => "done".into(),
        Outcome::Failed => format!("{} (failed)", n.stage),
        Outcome::Pending if n.deploy_sent.is_none() => "not deployed".into(),
        Outcome::Pending => n.stage.clone(),
    }
}

pub fn table(rec: &Record) -> String {
    let rows: Vec<[String; 6]> = rec
        .machines
        .iter()
        .map(|n| {
            [
                n.hostname.clone(),
                n.role.clone(),
                n.system_id.clone(),
                n.address.clone().unwrap_or_else(|| "-".into()),
                stage(n),
                took(n),
            ]
        })
        .collect();
    let head = ["NODE", "ROLE", "SYSTEM ID", "ADDRESS", "STAGE", "TIME"].map(str::to_owned);
    let mut widths = head.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(out, "VIP {} ({})", rec.vip, rec.vip_hostname);
    out
}

pub fn json(rec: &Record, ok: bool, timed_out: bool) -> Value {
    let nodes: Vec<Value> = rec
        .machines
        .iter()
        .map(|n| {
            json!({
                "hostname": n.hostname, "role": n.role, "system_id": n.system_id, "address": n.address,
                "maas_status": n.maas_status, "stage": n.stage, "outcome": n.outcome,
                "deployed": n.deploy_sent.is_some(), "error": n.error, "seconds": seconds(n),
            })
        })
        .collect();
    json!({
        "ok": ok, "timed_out": timed_out, "cluster": rec.cluster, "maas": rec.maas, "image": rec.image,
        "vip": rec.vip, "vip_state": rec.vip_state, "secrets": rec.secrets, "nodes": nodes,
    })
}

/// What failed, one line per node, for stderr.
pub fn failures(rec: &Record) -> Vec<String> {
    rec.machines
        .iter()
        .filter(|n| n.outcome == Outcome::Failed)
        .map(|n| {
            format!(
                "{} ({}, {}) failed at {}: {}",
                n.hostname,
                n.system_id,
                n.role,
                n.stage,
                n.error.as_deref().unwrap_or("no reason given")
            )
        })
        .collect()
}

/// The two ways on after a failure.
pub fn ways_on(maas: &str, state: &std::path::Path) -> String {
    format!(
        "the machines are left as they are for inspection; two ways on: fix the cause and run `node-init up` again \
         with the same --state {dir} (it continues from {dir}/state.json), or release everything with `node-init \
         down --maas {maas} --state {dir}`",
        dir = state.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::up::record::Vip;

    fn node(name: &str, role: &str, outcome: Outcome, stage: &str) -> Node {
        Node {
            system_id: format!("{name}x"),
            hostname: name.into(),
            fqdn: format!("{name}.maas"),
            address: Some("10.11.12.21".into()),
            role: role.into(),
            allocated_at: "2026-11-21T12:00:00Z".into(),
            deploy_sent: Some("2026-11-21T12:00:00Z".into()),
            maas_status: "Deployed".into(),
            stage: stage.into(),
            outcome,
            error: (outcome == Outcome::Failed).then(|| "kubernetes: kubeadm join failed".into()),
            last_event: None,
            finished_at: Some("2026-11-21T12:09:12Z".into()),
            released_at: None,
        }
    }

    #[test]
    fn the_table_has_a_row_per_node_and_the_failures_name_node_stage_and_words() {
        let rec = Record {
            cluster: "9f3c1a2b".into(),
            maas: "http://maas:5240/MAAS".into(),
            nodes: 2,
            image: "custom/pcg".into(),
            vip: "10.11.12.100".into(),
            vip_state: Vip::Reserved,
            vip_hostname: "pcg-vip-9f3c1a2b".into(),
            secrets: "pcg/secrets".into(),
            secrets_minted: true,
            created: String::new(),
            allocations_sent: 2,
            machines: vec![
                node("node1", "init", Outcome::Done, "done"),
                node("node2", "control-plane", Outcome::Failed, "kubernetes"),
            ],
            steps: vec![],
            down: None,
        };
        assert_eq!(
            table(&rec),
            "NODE   ROLE           SYSTEM ID  ADDRESS      STAGE                TIME\n\
             node1  init           node1x     10.11.12.21  done                 9m 12s\n\
             node2  control-plane  node2x     10.11.12.21  kubernetes (failed)  9m 12s\n\
             VIP 10.11.12.100 (pcg-vip-9f3c1a2b)\n"
        );
        assert_eq!(
            failures(&rec),
            ["node2 (node2x, control-plane) failed at kubernetes: kubernetes: kubeadm join failed"]
        );
        assert_eq!(json(&rec, false, false)["nodes"][1]["seconds"], 552);
    }
}
