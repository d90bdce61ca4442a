//! Watching the machines: each is polled (an interval with jitter, so many
//! operators' runs do not beat together) through Deploying to Deployed;
//! Failed deployment is final for it. A Deployed machine's event log is
//! then followed (`level=DEBUG`, only the events after the last one read)
//! until node-init reports `node-init/done` or a `FAIL`. The joins are
//! deployed once the init machine is Deployed, so that their first boot
//! finds the VIP coming up rather than waiting on a node still installing.
//! Every wait ends at the run's deadline (`--timeout`).

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use super::nodes::Deployer;
use super::record::{Node, Outcome, Record};
use crate::maas::api::Api;
use crate::maas::api::log::NodeInit;
use crate::maas::api::machines::status;

/// What the watch came to.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Every node reported; some may have failed.
    Settled,
    TimedOut,
}

/// One line per node and change, or a spinner per node on a terminal.
pub struct Progress {
    bars: Option<(indicatif::MultiProgress, Vec<indicatif::ProgressBar>)>,
    last: Vec<String>,
}

impl Progress {
    pub fn new(nodes: &[Node]) -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            let bars = nodes
                .iter()
                .map(|_| {
                    let b = multi.add(indicatif::ProgressBar::new_spinner());
                    b.set_style(style.clone());
                    b.enable_steady_tick(Duration::from_millis(200));
                    b
                })
                .collect();
            (multi, bars)
        });
        Self { bars, last: vec![String::new(); nodes.len()] }
    }

    pub fn show(&mut self, i: usize, n: &Node) {
        let line = format!(
            "{} ({}, {}): {}{}",
            n.hostname,
            n.system_id,
            n.role,
            n.maas_status,
            if n.maas_status != "Deployed" || n.stage.is_empty() || n.stage == "-" {
                String::new()
            } else {
                format!(", node-init: {}", n.stage)
            }
        );
        if self.last.get(i) == Some(&line) {
            return;
        }
        match &self.bars {
            Some((_, bars)) => bars[i].set_message(line.clone()),
            None => eprintln!("node-init: up: {line}"),
        }
        self.last[i] = line;
    }

    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for b in bars {
                b.finish();
            }
        }
    }
}

/// The wait between two polls: `interval`, plus or minus a quarter.
fn jittered(interval: Duration) -> Duration {
    let quarter = interval / 4;
    let nanos = u64::try_from(quarter.as_nanos()).unwrap_or(u64::MAX);
    interval - quarter + Duration::from_nanos(fastrand::u64(0..=nanos.saturating_mul(2)))
}

/// Polls until every node settled or the deadline, deploying the joins
/// when the init machine is Deployed.
pub async fn watch(
    api: &Api,
    rec: &mut Record,
    deployer: &Deployer<'_>,
    interval: Duration,
    deadline: Instant,
    save: &dyn Fn(&Record) -> Result<()>,
) -> Result<End> {
    let mut progress = Progress::new(&rec.machines);
    let mut states: Vec<NodeInit> = vec![NodeInit::Silent; rec.machines.len()];
    loop {
        let mut changed = false;
        for (n, st) in rec.machines.iter_mut().zip(states.iter_mut()) {
            if n.outcome != Outcome::Pending || n.deploy_sent.is_none() {
                continue;
            }
            let before = n.clone();
            poll(api, n, st).await?;
            changed |= before != *n;
        }
        let init_deployed = rec.machines.first().is_some_and(|n| n.maas_status == "Deployed");
        for i in 1..rec.machines.len() {
            if init_deployed && rec.machines[i].deploy_sent.is_none() {
                deployer.deploy(api, rec, i).await?;
                changed = true;
            }
        }
        for (i, n) in rec.machines.iter().enumerate() {
            progress.show(i, n);
        }
        if changed {
            save(rec)?;
        }
        let init_failed = rec.machines.first().is_some_and(|n| n.outcome == Outcome::Failed);
        // Without the init node no join can succeed: the joins are left
        // as they are.
        let settled = init_failed || rec.machines.iter().all(|n| n.outcome != Outcome::Pending);
        if settled {
            progress.finish();
            return Ok(End::Settled);
        }
        let wait = jittered(interval);
        if Instant::now() + wait >= deadline {
            progress.finish();
            return Ok(End::TimedOut);
        }
        tokio::time::sleep(wait).await;
    }
}

/// One look at one node: its machine until Deployed, then its events.
async fn poll(api: &Api, n: &mut Node, st: &mut NodeInit) -> Result<()> {
    if n.maas_status != "Deployed" {
        let m = api.machine(&n.system_id).await?;
        n.maas_status = m.status_name.clone();
        if let Some(ip) = m.ip_addresses.first() {
            n.address = Some(ip.clone());
        }
        if m.status == status::FAILED_DEPLOYMENT {
            let events = api.events(&n.system_id, None).await?;
            let text = events
                .iter()
                .rev()
                .find(|e| e.level == "ERROR")
                .map(|e| e.description.clone())
                .or(m.status_message.filter(|s| !s.is_empty()))
                .unwrap_or_else(|| "MAAS gave no reason".into());
            n.stage = "deployment".into();
            n.outcome = Outcome::Failed;
            n.error = Some(format!("MAAS: Failed deployment: {text}"));
            n.finished_at = Some(crate::state::now_rfc3339());
            return Ok(());
        }
        if m.status != status::DEPLOYED {
            return Ok(());
        }
    }
    let events = api.events(&n.system_id, n.last_event).await?;
    for e in &events {
        *st = std::mem::take(st).after(e);
        n.last_event = Some(e.id);
    }
    n.stage = st.stage().to_owned();
    match st {
        NodeInit::Done(_) => {
            n.outcome = Outcome::Done;
            n.finished_at = Some(crate::state::now_rfc3339());
        }
        NodeInit::Failed { text, .. } => {
            n.outcome = Outcome::Failed;
            n.error = Some(text.clone());
            n.finished_at = Some(crate::state::now_rfc3339());
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_waits_its_interval_give_or_take_a_quarter() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(8));
            assert!(d >= Duration::from_secs(6) && d <= Duration::from_secs(10), "{d:?}");
        }
    }
}
