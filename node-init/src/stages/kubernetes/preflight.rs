//! The gate before kubeadm: the `verify` checks kubeadm and the cluster
//! depend on ([`crate::config::PREFLIGHT`]: swap off, forwarding, the
//! modules, CIDRs clear of the machine network, the VIP free before init or
//! serving before a join). kubeadm would find the first of these only after
//! minutes, and say less; here every failing one is named at once, with
//! its reason. `kubernetes.ignore_preflight` overrules named checks, as
//! kubeadm's `--ignore-preflight-errors` does. Under `--root` there is no
//! live node to look at, so the gate is not run.
//!
//! One check is waited for: at a first boot the NTP client may not have
//! synchronised yet (timesyncd's first answer can come after node-init
//! reaches the gate), and that mends itself, so a failing `time_sync` is
//! asked again, with backoff and jitter, for up to [`CLOCK_WAIT`] before
//! it stops the stage.

use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

use crate::checks::{self, Inputs, Report, Status};
use crate::config::{Kubernetes, PREFLIGHT};
use crate::retry::Backoff;
use crate::stages::Context;

/// The checks' shared deadline; the VIP's ARP question is the slowest.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long a failing `time_sync` is waited for.
pub const CLOCK_WAIT: Duration = Duration::from_secs(180);
/// Between two questions about the clock: 2 s doubling to 20 s, jittered.
const CLOCK_ROUNDS: Backoff =
    Backoff { first: Duration::from_secs(2), max: Duration::from_secs(20), attempts: u32::MAX };

/// Runs the gate; the line it passed with, or the error naming every
/// failing check.
pub async fn gate(cx: &Context<'_>, k: &Kubernetes) -> Result<String> {
    if !cx.root.is_host() {
        return Ok("preflight left for the booted node (--root)".into());
    }
    let inputs = Inputs::new(cx.root, cx.config, cx.node, cx.runner, DEADLINE);
    let mut reports = checks::run_named(PREFLIGHT, &inputs, DEADLINE).await;
    if !k.ignore_preflight.iter().any(|i| i == "time_sync") {
        wait_for_clock(&mut reports, CLOCK_WAIT, || checks::run_named(&["time_sync"], &inputs, DEADLINE)).await;
    }
    verdict(&reports, &k.ignore_preflight)
}

/// While `time_sync` fails, asks again (through `again`) until it passes
/// or `wait` is over; its last report replaces the first.
async fn wait_for_clock<F, Fut>(reports: &mut [Report], wait: Duration, again: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<Report>>,
{
    let Some(slot) = reports.iter_mut().find(|r| r.name == "time_sync" && r.status == Status::Fail) else {
        return;
    };
    let deadline = Instant::now() + wait;
    let mut attempt = 1;
    while slot.status == Status::Fail {
        tracing::info!(reason = %slot.reason, "waiting for the clock to synchronise");
        if !CLOCK_ROUNDS.wait(attempt, deadline).await {
            slot.reason = format!("{} (still after {})", slot.reason, humantime::format_duration(wait));
            return;
        }
        match again().await.into_iter().next() {
            Some(r) => *slot = r,
            None => return,
        }
        attempt += 1;
    }
}

/// Every check that failed or could not run and is not ignored stops the
/// stage; ignored ones are logged.
pub fn verdict(reports: &[Report], ignore: &[String]) -> Result<String> {
    let bad = |r: &&Report| matches!(r.status, Status::Fail | Status::Error);
    let (ignored, failing): (Vec<&Report>, Vec<&Report>) =
        reports.iter().filter(bad).partition(|r| ignore.iter().any(|i| i == r.name));
    for r in &ignored {
        tracing::warn!(check = r.name, reason = %r.reason, "preflight check ignored (kubernetes.ignore_preflight)");
    }
    if !failing.is_empty() {
        let each: Vec<String> = failing.iter().map(|r| format!("{}: {}", r.name, r.reason)).collect();
        let names: Vec<&str> = failing.iter().map(|r| r.name).collect();
        bail!(
            "preflight before kubeadm failed: {}; fix these, or list them in kubernetes.ignore_preflight \
             ([{}]) to go on anyway",
            each.join("; "),
            names.join(", ")
        );
    }
    let passed = reports.iter().filter(|r| r.status == Status::Pass).count();
    Ok(format!("preflight: {passed} passed, {} ignored", ignored.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &'static str, status: Status, reason: &str) -> Report {
        Report { name, status, reason: reason.into(), duration_ms: 0 }
    }

    #[test]
    fn every_failing_check_is_named_with_its_reason() {
        let reports = [
            report("swap", Status::Fail, "swap is on (/swap.img): kubelet refuses to start"),
            report("ip_forward", Status::Fail, "net.ipv4.ip_forward = 0 (kubeadm needs 1)"),
            report("modules", Status::Error, "could not run: /sys/module does not exist"),
            report("cidr_overlap", Status::Pass, "clear"),
        ];
        let err = verdict(&reports, &[]).unwrap_err().to_string();
        assert!(err.contains("swap: swap is on (/swap.img)"), "{err}");
        assert!(err.contains("ip_forward: net.ipv4.ip_forward = 0"), "{err}");
        assert!(err.contains("modules: could not run"), "{err}");
        assert!(err.contains("[swap, ip_forward, modules]"), "{err}");
        assert!(!err.contains("cidr_overlap"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_that_synchronises_is_waited_for_and_one_that_does_not_stops_the_stage() {
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let again = || {
            let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let status = if n >= 2 { Status::Pass } else { Status::Fail };
            async move { vec![report("time_sync", status, "synchronised now")] }
        };
        let mut reports = [report("time_sync", Status::Fail, "not synchronised"), report("swap", Status::Pass, "off")];
        wait_for_clock(&mut reports, Duration::from_secs(180), again).await;
        assert_eq!(reports[0].status, Status::Pass, "{:?}", reports[0].reason);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);

        let never = || async { vec![report("time_sync", Status::Fail, "not synchronised")] };
        let mut reports = [report("time_sync", Status::Fail, "not synchronised")];
        let started = Instant::now();
        wait_for_clock(&mut reports, Duration::from_secs(60), never).await;
        assert!(started.elapsed() <= Duration::from_secs(61), "{:?}", started.elapsed());
        let err = verdict(&reports, &[]).unwrap_err().to_string();
        assert!(err.contains("time_sync: not synchronised (still after 1m)"), "{err}");
    }

    #[test]
    fn ignored_checks_do_not_stop_the_stage() {
        let reports = [report("swap", Status::Fail, "swap is on"), report("vip", Status::Pass, "free")];
        let line = verdict(&reports, &["swap".into()]).unwrap();
        assert_eq!(line, "preflight: 1 passed, 1 ignored");
        assert!(verdict(&reports, &["vip".into()]).is_err(), "ignoring another check does not hide swap");
    }
}
