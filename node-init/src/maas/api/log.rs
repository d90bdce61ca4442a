//! A machine's event log (`GET events/?op=query`, canonical/maas
//! `src/maasserver/api/events.py`) and what node-init's events in it say.
//!
//! The query answers `{count, events, next_uri, prev_uri}`, each event
//! `{id, level, type, description, created, node, hostname, username}`,
//! newest first, DEBUG hidden unless `level=DEBUG`; `after=ID` gives the
//! ones after ID. The event's name (`node-init/<stage>`) is not in the
//! answer: MAAS writes the description as `'<origin>' <description>`
//! (`add_event_to_node_event_log`), so node-init's are the ones starting
//! `'node-init' `, and their text begins with the stage
//! (`kubernetes: starting (attempt 1)`, `kubernetes failed: ...`,
//! `node-init done in 4m 12s: ...`), as `maas::events` words them.

use anyhow::{Context as _, Result};
use serde::Deserialize;

use super::Api;

/// One entry of a machine's event log.
#[derive(Debug, Clone, Deserialize)]
pub struct Logged {
    pub id: u64,
    #[serde(default)]
    pub level: String,
    /// The event type's description, e.g. "Node post-installation failure".
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub description: String,
}

/// Where node-init is on a machine, as its events tell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NodeInit {
    /// No event from node-init yet.
    #[default]
    Silent,
    /// Running; the stage it is in (or `started`, `rebooting`).
    At(String),
    /// `node-init/done`: the summary line.
    Done(String),
    /// A `FAIL`: the stage and node-init's words.
    Failed { stage: String, text: String },
}

impl NodeInit {
    /// The stage reached, for the table.
    pub fn stage(&self) -> &str {
        match self {
            Self::Silent => "-",
            Self::At(s) => s,
            Self::Done(_) => "done",
            Self::Failed { stage, .. } => stage,
        }
    }

    /// The next state after event `e` (others' events change nothing).
    pub fn after(self, e: &Logged) -> Self {
        let Some(text) = e.description.strip_prefix("'node-init' ") else { return self };
        let text = text.trim();
        if text.starts_with("node-init done") {
            return Self::Done(text.to_owned());
        }
        if text.starts_with("node-init started") {
            return Self::At("started".into());
        }
        if let Some(rest) = text.strip_prefix("rebooting for ") {
            let stage = rest.split(':').next().unwrap_or(rest);
            return Self::At(format!("{stage} (rebooting)"));
        }
        let stage: String = text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let failed = e.level == "ERROR" || e.kind.contains("failure");
        if failed {
            // The stage's own FAIL comes first, then the run's `<stage>
            // failed: ...`; either names the stage.
            return match self {
                f @ Self::Failed { .. } if text.starts_with(&format!("{stage} failed:")) => f,
                _ => Self::Failed { stage, text: text.to_owned() },
            };
        }
        if stage.is_empty() { self } else { Self::At(stage) }
    }
}

impl Api {
    /// The events of `system_id` after `after` (all with `None`), oldest
    /// first, DEBUG included.
    pub async fn events(&self, system_id: &str, after: Option<u64>) -> Result<Vec<Logged>> {
        let after = after.map(|a| a.to_string());
        let mut query = vec![("id", system_id), ("level", "DEBUG"), ("limit", "1000")];
        if let Some(a) = &after {
            query.push(("after", a));
        }
        let mut q = vec![("op", "query")];
        q.extend(query);
        let v = self.get("events/", &q).await?;
        let events = v.get("events").cloned().context("GET events/?op=query: no events key")?;
        let mut events: Vec<Logged> = serde_json::from_value(events).context("GET events/?op=query")?;
        events.sort_by_key(|e| e.id);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u64, level: &str, kind: &str, d: &str) -> Logged {
        Logged { id, level: level.into(), kind: kind.into(), description: d.into() }
    }

    #[test]
    fn node_inits_events_tell_its_stage_its_end_and_its_failure() {
        let run = [
            e(1, "INFO", "Deployed", "Deployed"),
            e(2, "DEBUG", "Node status event", "'node-init' node-init started in boot 0d9c"),
            e(3, "DEBUG", "Node status event", "'node-init' proxy: starting (attempt 1)"),
            e(4, "DEBUG", "Node status event", "'node-init' rebooting for patch: /var/run/reboot-required"),
            e(5, "DEBUG", "Node status event", "'node-init' kubernetes: starting (attempt 1)"),
        ];
        let mut s = NodeInit::Silent;
        let mut seen = Vec::new();
        for ev in &run {
            s = s.after(ev);
            seen.push(s.stage().to_owned());
        }
        assert_eq!(seen, ["-", "started", "proxy", "patch (rebooting)", "kubernetes"]);
        let failed = s
            .clone()
            .after(&e(6, "ERROR", "Node post-installation failure", "'node-init' kubernetes: kubeadm join failed"))
            .after(&e(7, "ERROR", "Node post-installation failure", "'node-init' kubernetes failed: kubeadm join"));
        assert_eq!(
            failed,
            NodeInit::Failed { stage: "kubernetes".into(), text: "kubernetes: kubeadm join failed".into() }
        );
        let done = s.after(&e(8, "DEBUG", "Node status event", "'node-init' node-init done in 4m: kubernetes done"));
        assert_eq!(done.stage(), "done");
    }
}
