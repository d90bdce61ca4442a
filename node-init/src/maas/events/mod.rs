//! What node-init tells MAAS, and how each event is kept until MAAS has it.
//!
//! Events are cloud-init's reporting events as MAAS's status handler reads
//! them (`metadataserver/api_twisted.py`): `event_type`, `origin`, `name`
//! and `description` are required, `timestamp` is a number, `result` is
//! `SUCCESS` or `FAIL`, and `files` carry `path`, `encoding` and `content`.
//! On a Deployed machine MAAS keeps only `start` events and `FAIL` results
//! (`add_event_to_node_event_log`), so every milestone an operator must see
//! is a `start`: a stage starting, a reboot about to happen, `node-init/done`.
//!
//! Every event is first put in the [`Outbox`], which lives in the state file,
//! and is then offered to MAAS (`deliver`); what MAAS did not take stays
//! pending and is offered again at the next transition, in this run or the
//! next, until it is delivered or given up. `files` builds the attachments
//! of a failure and keeps every body ASCII and free of secrets.

mod deliver;
mod files;

use serde::{Deserialize, Serialize};
use serde_json::json;

pub use self::deliver::{Reporter, Transition};

/// `origin` of every event, and the prefix of every `name`.
pub const ORIGIN: &str = "node-init";
/// `node-init/done`, the event that says node-init finished: a `start`,
/// because MAAS does not keep a `finish` that succeeded.
pub const DONE: &str = "done";
/// `node-init/reboot`, the event that announces a reboot before it happens.
pub const REBOOT: &str = "reboot";
/// Runs in which an event may fail to be delivered before it is given up.
pub const MAX_RUNS: u32 = 3;
/// Delivered and given-up events kept for `status`; pending ones are all kept.
const KEEP_SETTLED: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Start,
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "SUCCESS")]
    Success,
    /// Exactly `FAIL`: the one failure MAAS logs on a Deployed machine.
    #[serde(rename = "FAIL")]
    Fail,
}

/// A file attached to an event, as MAAS's `_retrieve_content` decodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub path: String,
    pub encoding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    pub content: String,
}

/// One event, exactly as it is posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_type: Kind,
    pub origin: String,
    pub name: String,
    pub description: String,
    /// Seconds since 1970, as cloud-init's `time.time()`.
    pub timestamp: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
}

impl Event {
    /// An event named `node-init` (the whole run) or `node-init/<what>`.
    pub fn new(kind: Kind, what: Option<&str>, description: impl Into<String>) -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self {
            event_type: kind,
            origin: ORIGIN.to_owned(),
            name: what.map_or_else(|| ORIGIN.to_owned(), |w| format!("{ORIGIN}/{w}")),
            description: description.into(),
            // Milliseconds are enough, and keep the number short.
            timestamp: (now.as_millis() as f64) / 1000.0,
            result: None,
            files: Vec::new(),
        }
    }

    pub fn result(mut self, verdict: Verdict) -> Self {
        self.result = Some(verdict);
        self
    }

    /// The body MAAS gets: JSON with every non-ASCII character escaped,
    /// since MAAS refuses a body that is not ASCII.
    pub fn body(&self) -> String {
        files::ascii(&serde_json::to_string(self).expect("an event serializes"))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    #[default]
    Pending,
    Delivered,
    /// MAAS refused it, or it went undelivered through [`MAX_RUNS`] runs.
    GaveUp,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::GaveUp => "gave-up",
        }
    }
}

/// An event and how its delivery went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub event: Event,
    pub delivery: Delivery,
    /// POSTs made for it.
    pub tries: u32,
    /// Runs in which it was offered and not taken.
    pub failed_runs: u32,
    /// The run (see [`Outbox::runs`]) that last counted in `failed_runs`.
    #[serde(default)]
    pub failed_in_run: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The events of this node, in the order they happened: the part of the
/// state file that belongs to MAAS reporting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    /// A `node-init` start was reported and its finish not yet: the whole
    /// run is under way, across reboots.
    #[serde(default)]
    pub open: bool,
    /// When the open run started (seconds since 1970).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<f64>,
    /// Runs of node-init that reported, this one included.
    #[serde(default)]
    pub runs: u32,
    #[serde(default)]
    pub events: Vec<Record>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.open && self.runs == 0
    }

    pub fn push(&mut self, event: Event) {
        self.events.push(Record {
            event,
            delivery: Delivery::Pending,
            tries: 0,
            failed_runs: 0,
            failed_in_run: 0,
            last_error: None,
        });
    }

    pub fn count(&self, d: Delivery) -> usize {
        self.events.iter().filter(|r| r.delivery == d).count()
    }

    /// Drops the oldest settled events past [`KEEP_SETTLED`]; a settled
    /// event's files are dropped at once (MAAS has them, or never will).
    pub fn prune(&mut self) {
        for r in self.events.iter_mut().filter(|r| r.delivery != Delivery::Pending) {
            r.event.files.clear();
        }
        let mut excess =
            self.events.iter().filter(|r| r.delivery != Delivery::Pending).count().saturating_sub(KEEP_SETTLED);
        self.events.retain(|r| {
            let drop = excess > 0 && r.delivery != Delivery::Pending;
            excess -= usize::from(drop);
            !drop
        });
    }

    /// What `status --output json` shows: counts, then each event without
    /// its files.
    pub fn report(&self) -> serde_json::Value {
        let events: Vec<_> = self
            .events
            .iter()
            .map(|r| {
                let e = &r.event;
                let mut v = json!({
                    "event_type": e.event_type, "name": e.name, "description": e.description,
                    "timestamp": e.timestamp, "delivery": r.delivery.as_str(), "tries": r.tries,
                });
                if let Some(res) = e.result {
                    v["result"] = json!(res);
                }
                if !e.files.is_empty() {
                    v["files"] = e.files.iter().map(|f| f.path.clone()).collect();
                }
                if let Some(err) = &r.last_error {
                    v["last_error"] = err.clone().into();
                }
                v
            })
            .collect();
        json!({
            "delivered": self.count(Delivery::Delivered),
            "pending": self.count(Delivery::Pending),
            "gave_up": self.count(Delivery::GaveUp),
            "events": events,
        })
    }

    /// What the `status` table shows: one line of counts, then a line for
    /// each event MAAS does not have.
    pub fn table(&self) -> String {
        let mut out = format!(
            "maas: {} events delivered, {} pending, {} gave up\n",
            self.count(Delivery::Delivered),
            self.count(Delivery::Pending),
            self.count(Delivery::GaveUp)
        );
        for r in self.events.iter().filter(|r| r.delivery != Delivery::Delivered) {
            let e = &r.event;
            let kind = if e.event_type == Kind::Start { "start" } else { "finish" };
            let why = r.last_error.as_deref().map(|w| format!("; last: {w}")).unwrap_or_default();
            out.push_str(&format!(
                "maas: {} {kind} {}: {} ({} tries{why})\n",
                r.delivery.as_str(),
                e.name,
                e.description,
                r.tries
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_what_maas_requires_and_ascii() {
        let e =
            Event::new(Kind::Finish, Some("dns"), "dns: node1.maas \u{2192} 10.0.0.5 \u{1F600}").result(Verdict::Fail);
        let body = e.body();
        assert!(body.is_ascii(), "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for key in ["event_type", "origin", "name", "description", "timestamp"] {
            assert!(v.get(key).is_some(), "{key} missing in {body}");
        }
        assert_eq!(v["event_type"], "finish");
        assert_eq!(v["origin"], "node-init");
        assert_eq!(v["name"], "node-init/dns");
        assert_eq!(v["result"], "FAIL");
        assert!(v["timestamp"].is_f64());
        assert_eq!(v["description"], "dns: node1.maas \u{2192} 10.0.0.5 \u{1F600}", "escaped, not lost");
        assert!(v.get("files").is_none());
        let start = serde_json::to_value(Event::new(Kind::Start, None, "x")).unwrap();
        assert_eq!(start["name"], "node-init");
        assert!(start.get("result").is_none(), "a start has no result, as cloud-init's");
    }

    #[test]
    fn prune_keeps_every_pending_event_and_drops_old_settled_ones() {
        let mut o = Outbox::default();
        for i in 0..100 {
            o.push(Event::new(Kind::Start, Some("x"), format!("{i}")));
            if i % 10 != 0 {
                o.events[i].delivery = Delivery::Delivered;
            }
        }
        o.prune();
        assert_eq!(o.count(Delivery::Pending), 10);
        assert_eq!(o.count(Delivery::Delivered), KEEP_SETTLED);
        assert_eq!(o.events.last().unwrap().event.description, "99", "the newest are kept");
    }
}
