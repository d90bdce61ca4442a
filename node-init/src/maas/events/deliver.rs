//! The reporter: turns the pipeline's transitions into events, puts them in
//! the outbox and offers every pending one to MAAS, oldest first.
//!
//! Reporting is never in the way. Each POST has [`POST_TIMEOUT`]; an event
//! gets [`TRIES`] tries with jittered backoff; a 401 or 403 teaches the
//! client MAAS's clock before the next try. All the reporting of one run
//! together spends at most [`RUN_BUDGET`]: past it, events stay pending
//! for the next run. Once an event has failed its tries in a run, MAAS is
//! taken to be away: later transitions of the run probe it with one try.
//! A 4xx other than 401, 403, 408 or 429 is MAAS refusing that event for
//! good: it is given up at once; but a 413 for an event carrying files is
//! the region's front end refusing their size, and the event goes again at
//! once without them. Nothing here returns an error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use tokio::time::Instant;

use super::files::{self, Scrubber};
use super::{DONE, Delivery, Event, Kind, MAX_RUNS, REBOOT, Verdict};
use crate::config::Config;
use crate::maas::Endpoint;
use crate::maas::http::Client;
use crate::retry::Backoff;
use crate::root::Root;
use crate::state::{StageRecord, State, Status};

/// One POST's deadline, connect included.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of one event in one transition.
pub const TRIES: u32 = 3;
/// All the time one run may spend reporting.
pub const RUN_BUDGET: Duration = Duration::from_secs(20);
/// Less time than this left is no time for a try.
const MIN_TRY: Duration = Duration::from_millis(50);
const BACKOFF: Backoff = Backoff { first: Duration::from_millis(500), max: Duration::from_secs(2), attempts: TRIES };
/// The file names MAAS stores a failure's attachments under.
pub const LOG_FILE: &str = "node-init.log";
pub const STATUS_FILE: &str = "node-init-status.json";

/// What happened in the pipeline.
pub enum Transition<'a> {
    StageStarted {
        stage: &'a str,
        attempt: u32,
    },
    /// A stage's record after it settled or failed (or, after a reboot,
    /// resumed as done).
    StageEnded {
        stage: &'a str,
        record: &'a StageRecord,
    },
    /// A reboot about to happen, or required and not done (`why_not`).
    Rebooting {
        stage: &'a str,
        reason: &'a str,
        why_not: Option<&'a str>,
    },
    /// Every stage is settled and the done marker written; the stages in
    /// pipeline order.
    Done {
        stages: &'a [&'a str],
    },
    /// The run stopped at a failed stage.
    Failed {
        stage: &'a str,
        error: &'a str,
    },
}

pub struct Reporter {
    endpoint: Endpoint,
    client: Client,
    scrubber: Scrubber,
    /// Renders `status --output json`, attached to a failure.
    status_json: fn(&Root, &State) -> serde_json::Value,
    spent_ms: AtomicU64,
    /// An event failed all its tries in this run: probe with one try.
    away: AtomicBool,
    counted: AtomicBool,
}

enum Outcome {
    Delivered,
    Refused(String),
    Failed(String),
}

impl Reporter {
    pub fn new(
        endpoint: Endpoint,
        client: Client,
        config: &Config,
        status_json: fn(&Root, &State) -> serde_json::Value,
    ) -> Self {
        let scrubber = Scrubber::new(config, &[]);
        Self {
            endpoint,
            client,
            scrubber,
            status_json,
            spent_ms: AtomicU64::new(0),
            away: AtomicBool::new(false),
            counted: AtomicBool::new(false),
        }
    }

    /// Records the events of `t` in the state's outbox, then offers every
    /// pending event to MAAS. The caller saves the state.
    pub async fn report(&self, root: &Root, st: &mut State, t: Transition<'_>) {
        for e in self.events(root, st, t) {
            let mut e = e;
            e.description = self.clean(&e.description);
            st.maas.push(e);
        }
        self.flush(st).await;
    }

    /// Offers every pending event to MAAS, oldest first, until one is not
    /// taken or the run's budget is spent.
    pub async fn flush(&self, st: &mut State) {
        if !self.counted.swap(true, Ordering::Relaxed) {
            st.maas.runs += 1;
        }
        let run = st.maas.runs;
        for i in 0..st.maas.events.len() {
            if st.maas.events[i].delivery != Delivery::Pending {
                continue;
            }
            if self.budget_left() < MIN_TRY {
                tracing::debug!("the run's reporting budget is spent; the rest waits for the next run");
                break;
            }
            let tries = if self.away.load(Ordering::Relaxed) { 1 } else { TRIES };
            let (outcome, made) = self.deliver(&st.maas.events[i].event, tries).await;
            let r = &mut st.maas.events[i];
            r.tries += made;
            match outcome {
                Outcome::Delivered => {
                    r.delivery = Delivery::Delivered;
                    r.last_error = None;
                    self.away.store(false, Ordering::Relaxed);
                }
                Outcome::Refused(why) => {
                    tracing::warn!(event = %r.event.name, error = %why, "MAAS refused an event; giving it up");
                    r.delivery = Delivery::GaveUp;
                    r.last_error = Some(why);
                }
                Outcome::Failed(why) => {
                    if made > 0 && r.failed_in_run != run {
                        r.failed_in_run = run;
                        r.failed_runs += 1;
                    }
                    if r.failed_runs >= MAX_RUNS {
                        r.delivery = Delivery::GaveUp;
                    }
                    tracing::warn!(event = %r.event.name, error = %why, delivery = r.delivery.as_str(), "MAAS did not take an event");
                    r.last_error = Some(why);
                    if made > 0 {
                        self.away.store(true, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
        st.maas.prune();
    }

    fn budget_left(&self) -> Duration {
        RUN_BUDGET.saturating_sub(Duration::from_millis(self.spent_ms.load(Ordering::Relaxed)))
    }

    /// Up to `tries` POSTs of one event within what is left of the budget;
    /// the outcome and the number of POSTs made.
    async fn deliver(&self, event: &Event, tries: u32) -> (Outcome, u32) {
        let started = Instant::now();
        let deadline = started + self.budget_left();
        let mut body = event.body();
        let mut bare = event.files.is_empty();
        let mut last = String::new();
        let mut made = 0;
        let mut attempt = 0;
        while attempt < tries {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_TRY {
                break;
            }
            made += 1;
            let sent = self
                .client
                .send(Method::POST, &self.endpoint.url, &self.endpoint.key, Some(body.clone()), POST_TIMEOUT.min(left))
                .await;
            match sent {
                Ok(a) if a.success() => return self.spent(started, (Outcome::Delivered, made)),
                // The region's front end will not take a body this large:
                // the event is worth more to the operator than its files,
                // so it goes again at once without them.
                Ok(a) if a.status == 413 && !bare => {
                    tracing::warn!(event = %event.name, "MAAS refused the event with its files as too large (413); sending it without them");
                    let mut without = event.clone();
                    without.files.clear();
                    body = without.body();
                    bare = true;
                    attempt -= 1;
                    continue;
                }
                Ok(a) if a.status >= 500 || matches!(a.status, 401 | 403 | 408 | 429) => last = a.brief(),
                Ok(a) => return self.spent(started, (Outcome::Refused(self.clean(&a.brief())), made)),
                Err(why) => last = why,
            }
            if attempt == tries || !BACKOFF.wait(attempt, deadline).await {
                break;
            }
        }
        self.spent(started, (Outcome::Failed(self.clean(&last)), made))
    }

    fn spent<T>(&self, started: Instant, out: T) -> T {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.spent_ms.fetch_add(ms, Ordering::Relaxed);
        out
    }

    /// One line, no secret, a bounded length.
    fn clean(&self, text: &str) -> String {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
        let line = self.endpoint.key.redact(&self.scrubber.scrub(line));
        if line.chars().count() > 1000 { line.chars().take(997).chain("...".chars()).collect() } else { line }
    }

    /// The events one transition makes; the whole run's start comes
    /// before its first stage's.
    fn events(&self, root: &Root, st: &mut State, t: Transition<'_>) -> Vec<Event> {
        let mut out = Vec::new();
        if !st.maas.open && !matches!(t, Transition::Done { .. } | Transition::Failed { .. }) {
            let e = Event::new(Kind::Start, None, format!("node-init started in boot {}", boot(root)));
            st.maas.open = true;
            st.maas.opened_at = Some(e.timestamp);
            out.push(e);
        }
        match t {
            Transition::StageStarted { stage, attempt } => {
                out.push(Event::new(Kind::Start, Some(stage), format!("{stage}: starting (attempt {attempt})")));
            }
            Transition::StageEnded { stage, record } => out.push(self.stage_ended(root, st, stage, record)),
            Transition::Rebooting { stage, reason, why_not } => {
                let text = match why_not {
                    None => format!("rebooting for {stage}: {reason}"),
                    Some(why) => format!(
                        "reboot required for {stage}: {reason}; not rebooting ({why}): reboot the node to go on"
                    ),
                };
                out.push(Event::new(Kind::Start, Some(REBOOT), text));
            }
            Transition::Done { stages } => {
                let took = st.maas.opened_at.map(took).unwrap_or_default();
                let each: Vec<String> = stages
                    .iter()
                    .filter_map(|n| st.stages.get(*n).map(|r| format!("{n} {}", r.status.as_str())))
                    .collect();
                let text = format!("node-init done{took}: {}", each.join(", "));
                out.push(Event::new(Kind::Finish, None, text.clone()).result(Verdict::Success));
                out.push(Event::new(Kind::Start, Some(DONE), text));
                st.maas.open = false;
            }
            Transition::Failed { stage, error } => {
                out.push(Event::new(Kind::Finish, None, format!("{stage} failed: {error}")).result(Verdict::Fail));
                st.maas.open = false;
            }
        }
        out
    }

    /// A stage's finish: its summary, why it was skipped, or its error
    /// with node-init's log and status attached.
    fn stage_ended(&self, root: &Root, st: &State, stage: &str, r: &StageRecord) -> Event {
        let rebooted = r.rebooted_from_boot.as_ref().map(|b| format!("; resumed after the reboot out of boot {b}"));
        let rebooted = rebooted.unwrap_or_default();
        let said = match r.status {
            Status::Skipped => format!("skipped: {}", r.reason.as_deref().unwrap_or("nothing to do")),
            Status::Failed => r.last_error.clone().unwrap_or_else(|| "failed".into()),
            _ => r.summary.clone().unwrap_or_else(|| "done".into()),
        };
        let e = Event::new(Kind::Finish, Some(stage), format!("{stage}: {said}{rebooted}"));
        if r.status != Status::Failed {
            return e.result(Verdict::Success);
        }
        let log = self.scrubber.scrub(&self.endpoint.key.redact(&crate::logging::captured()));
        let status = serde_json::to_string_pretty(&(self.status_json)(root, st)).unwrap_or_default() + "\n";
        let status = self.scrubber.scrub(&self.endpoint.key.redact(&status));
        let mut e = e.result(Verdict::Fail);
        e.files = vec![files::file(LOG_FILE, log.as_bytes()), files::file(STATUS_FILE, status.as_bytes())];
        e
    }
}

fn boot(root: &Root) -> String {
    crate::state::boot_id(root).unwrap_or_else(|_| "unknown".into())
}

/// " in 4m 12s" since `since` (seconds since 1970).
fn took(since: f64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let secs = (now - since).max(0.0).round() as u64;
    format!(" in {}", humantime::format_duration(Duration::from_secs(secs)))
}
