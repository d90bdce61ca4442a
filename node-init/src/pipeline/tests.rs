use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::bail;
use async_trait::async_trait;

use super::*;
use crate::config::Config;
use crate::stages::Fingerprint;
use crate::testing::World;

/// A stage whose behaviour the test sets: fail the first `fail_first`
/// runs, ask for a reboot, or write a file.
struct Fake {
    name: &'static str,
    calls: AtomicU32,
    fail_first: u32,
    reboot: bool,
}

impl Fake {
    fn new(name: &'static str) -> Self {
        Self { name, calls: AtomicU32::new(0), fail_first: 0, reboot: false }
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Stage for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn inputs(&self, config: &Config, f: &mut Fingerprint) {
        f.add("patch", config.os.patch).add("reboot", config.os.reboot.as_str());
    }
    async fn run(&self, cx: &Context<'_>) -> Result<Outcome> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.fail_first {
            bail!("attempt {n} failed");
        }
        cx.write(&format!("/out/{}", self.name), b"ok\n", 0o644)?;
        if self.reboot {
            return Ok(Outcome::RebootRequired { reason: "kernel".into(), done: Done::default() });
        }
        Ok(Outcome::Done(Done::default()))
    }
}

#[test]
fn resumes_at_the_failed_stage() {
    let w = World::new();
    let config = Config::default();
    let a = Fake::new("a");
    let b = Fake { fail_first: 1, ..Fake::new("b") };
    let c = Fake::new("c");
    let table: [&dyn Stage; 3] = [&a, &b, &c];
    assert_eq!(w.run_with(&table, &config, &Options::default(), false, false).0, End::Failed);
    let st = w.state();
    assert_eq!(st.stages["b"].status, Status::Failed);
    assert_eq!(st.stages["b"].last_error.as_deref(), Some("attempt 1 failed"));
    assert!(!st.stages.contains_key("c"));
    assert!(!w.root.exists(state::DONE_PATH));

    assert_eq!(w.run_with(&table, &config, &Options::default(), false, false).0, End::Done);
    assert_eq!((a.calls(), b.calls(), c.calls()), (1, 2, 1));
    assert_eq!(w.state().stages["b"].attempts, 2);
    assert!(w.root.exists(state::DONE_PATH));
}

#[test]
fn changed_inputs_rerun_a_settled_stage() {
    let w = World::new();
    let mut config = Config::default();
    let a = Fake::new("a");
    let table: [&dyn Stage; 1] = [&a];
    w.run_with(&table, &config, &Options::default(), false, false);
    w.run_with(&table, &config, &Options::default(), false, false);
    assert_eq!(a.calls(), 1);
    config.os.patch = true;
    w.run_with(&table, &config, &Options::default(), false, false);
    assert_eq!(a.calls(), 2);
}

#[test]
fn a_reboot_is_recorded_then_resumed_in_the_next_boot() {
    let w = World::new();
    let config = Config::default();
    let p = Fake { reboot: true, ..Fake::new("patch") };
    let next = Fake::new("next");
    let table: [&dyn Stage; 2] = [&p, &next];
    assert_eq!(w.run_with(&table, &config, &Options::default(), false, false).0, End::RebootRequired);
    let st = w.state();
    assert_eq!(st.stages["patch"].status, Status::RebootPending);
    assert_eq!(st.reboots.len(), 1);
    assert_eq!(st.reboots[0].boot_id, "boot-1");
    // Same boot: still pending, the stage is not run again.
    assert_eq!(w.run_with(&table, &config, &Options::default(), false, false).0, End::RebootRequired);
    assert_eq!((p.calls(), next.calls()), (1, 0));
    // New boot: done, and the pipeline goes on without a second reboot.
    w.boot("boot-2");
    assert_eq!(w.run_with(&table, &config, &Options::default(), false, false).0, End::Done);
    assert_eq!((p.calls(), next.calls()), (1, 1));
    let st = w.state();
    assert_eq!(st.stages["patch"].status, Status::Done);
    assert_eq!(st.stages["patch"].rebooted_from_boot.as_deref(), Some("boot-1"));
    assert_eq!(st.reboots.len(), 1);
    assert!(w.runner.calls().is_empty(), "--root never reboots the host");
}

#[test]
fn the_loop_guard_stops_a_fourth_reboot() {
    let w = World::new();
    let mut config = Config::default();
    let p = Fake { reboot: true, ..Fake::new("patch") };
    let table: [&dyn Stage; 1] = [&p];
    for boot in 1..=3 {
        w.boot(&format!("boot-{boot}"));
        // New inputs each time so the settled stage runs again.
        config.os.patch = boot % 2 == 0;
        let code = w.run_with(&table, &config, &Options::default(), false, false).0;
        if code == End::Done {
            config.os.reboot = crate::config::RebootPolicy::Always;
            assert_eq!(w.run_with(&table, &config, &Options::default(), false, false).0, End::RebootRequired);
        } else {
            assert_eq!(code, End::RebootRequired);
        }
    }
    assert_eq!(w.state().reboots.len(), MAX_REBOOTS);
    w.boot("boot-4");
    config.os.reboot = crate::config::RebootPolicy::Never;
    w.run_with(&table, &config, &Options::default(), false, false);
    config.os.patch = !config.os.patch;
    assert_eq!(w.run_with(&table, &config, &Options::default(), false, false).0, End::Failed);
    let err = w.state().stages["patch"].last_error.clone().unwrap();
    assert!(err.contains("refusing to reboot again"), "{err}");
}

#[test]
fn only_and_skip_select_and_unknown_names_are_usage_errors() {
    let w = World::new();
    let config = Config::default();
    let a = Fake::new("a");
    let b = Fake::new("b");
    let table: [&dyn Stage; 2] = [&a, &b];
    w.run_with(&table, &config, &Options { only: vec!["b".into()], ..Options::default() }, false, false);
    assert_eq!((a.calls(), b.calls()), (0, 1));
    assert!(!w.root.exists(state::DONE_PATH), "a partial run is not done");
    w.run_with(&table, &config, &Options { skip: vec!["b".into()], ..Options::default() }, false, false);
    assert_eq!((a.calls(), b.calls()), (1, 1));

    let cx = Context::new(&w.root, &w.node, &config, &w.runner, false);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(run(&table, &cx, &Options { only: vec!["zz".into()], ..Options::default() })).unwrap_err();
    assert!(crate::error::is_bad_input(&err), "{err}");
    assert!(err.to_string().contains("unknown stage \"zz\"; the stages are: a, b"), "{err}");
}

#[test]
fn dry_run_plans_and_changes_nothing() {
    let w = World::new();
    let config = Config::default();
    let a = Fake::new("a");
    let table: [&dyn Stage; 1] = [&a];
    let (code, plan) = w.run_with(&table, &config, &Options::default(), false, true);
    assert_eq!(code, End::Done);
    assert_eq!(plan, ["would create /out/a (mode 644)"]);
    assert!(!w.root.exists("/out/a"));
    assert!(!w.root.exists(state::STATE_PATH));
    assert!(!w.root.exists(state::STATE_DIR));
}

// --- work ahead of its turn ----------------------------------------------

/// What the fakes below did, in order.
#[derive(Default)]
struct Log(std::sync::Mutex<Vec<String>>);

impl Log {
    fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn position(&self, line: &str) -> usize {
        self.lines().iter().position(|l| l == line).unwrap_or_else(|| panic!("no {line:?} in {:?}", self.lines()))
    }
}

/// The patch's part: takes `secs`, lets work ahead run beside it, and may
/// ask for a reboot.
struct Slow<'l> {
    log: &'l Log,
    secs: u64,
    reboot: bool,
}

#[async_trait]
impl Stage for Slow<'_> {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn inputs(&self, _: &Config, _: &mut Fingerprint) {}
    fn overlaps(&self) -> bool {
        true
    }
    async fn run(&self, _: &Context<'_>) -> Result<Outcome> {
        self.log.push("slow: start");
        tokio::time::sleep(Duration::from_secs(self.secs)).await;
        self.log.push("slow: end");
        if self.reboot {
            return Ok(Outcome::RebootRequired { reason: "kernel".into(), done: Done::default() });
        }
        Ok(Outcome::Done(Done::default()))
    }
}

/// A later stage whose work can be done ahead (taking `secs`, failing when
/// `ahead_fails`); at its turn it takes that, or does the work itself
/// (failing when `own_fails`).
struct Later<'l> {
    log: &'l Log,
    secs: u64,
    ahead_fails: bool,
    own_fails: bool,
}

impl<'l> Later<'l> {
    fn new(log: &'l Log, secs: u64) -> Self {
        Self { log, secs, ahead_fails: false, own_fails: false }
    }
}

#[async_trait]
impl Stage for Later<'_> {
    fn name(&self) -> &'static str {
        "later"
    }
    fn inputs(&self, _: &Config, _: &mut Fingerprint) {}
    fn ahead_slots(&self, _: &Config) -> &'static [&'static str] {
        &["later"]
    }
    async fn ahead(&self, _: &Context<'_>, ahead: &Ahead) {
        let work = async {
            self.log.push("later: ahead start");
            tokio::time::sleep(Duration::from_secs(self.secs)).await;
            self.log.push("later: ahead end");
            if self.ahead_fails {
                bail!("registry down");
            }
            Ok(Done::default().summary("done ahead"))
        };
        ahead.run("later", Some("same inputs".into()), work).await;
    }
    async fn run(&self, cx: &Context<'_>) -> Result<Outcome> {
        if let Some(done) = cx.ahead().and_then(|a| a.take("later")) {
            self.log.push("later: took");
            return Ok(Outcome::Done(done));
        }
        self.log.push("later: own");
        tokio::time::sleep(Duration::from_secs(self.secs)).await;
        if self.own_fails {
            bail!("the registry refused: 503");
        }
        Ok(Outcome::Done(Done::default().summary("done at its turn")))
    }
}

fn overlapped(parallel: bool) -> Config {
    let mut c = Config::default();
    c.run.parallel = parallel;
    c
}

/// The run's end and how long it took on the (paused) clock.
fn timed(w: &World, table: &[&dyn Stage], config: &Config) -> (End, Duration) {
    let node = w.node_now();
    let cx = Context::new(&w.root, &node, config, &w.runner, false);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        let end = run(table, &cx, &Options::default()).await.unwrap();
        (end, start.elapsed())
    })
}

#[test]
fn later_work_runs_beside_the_overlapping_stage_and_is_recorded_at_its_turn_in_order() {
    let w = World::new();
    let log = Log::default();
    let (slow, later) = (Slow { log: &log, secs: 60, reboot: false }, Later::new(&log, 40));
    let (end, took) = timed(&w, &[&slow, &later], &overlapped(true));
    assert_eq!(end, End::Done);
    // max(60, 40), not 60 + 40.
    assert!(took < Duration::from_secs(61), "{took:?}");
    assert!(log.position("later: ahead start") < log.position("slow: end"), "{:?}", log.lines());
    assert!(log.position("slow: end") < log.position("later: took"), "{:?}", log.lines());
    let st = w.state();
    let rec = &st.stages["later"];
    assert_eq!(rec.summary.as_deref(), Some("done ahead"));
    assert_eq!(rec.details["later_done_ahead"], w.node_now().boot_id.as_str());
    // The records keep the table's order: the later stage started after
    // the slow one finished, though its work was done during it.
    assert!(st.stages["slow"].finished.as_deref().unwrap() <= rec.started.as_str());
    assert!(st.ahead.is_empty(), "kept after every stage settled: {:?}", st.ahead);
}

#[test]
fn with_parallel_false_each_stage_does_its_own_work_in_turn() {
    let w = World::new();
    let log = Log::default();
    let (slow, later) = (Slow { log: &log, secs: 60, reboot: false }, Later::new(&log, 40));
    let (end, took) = timed(&w, &[&slow, &later], &overlapped(false));
    assert_eq!(end, End::Done);
    assert!(took >= Duration::from_secs(100), "{took:?}");
    assert_eq!(log.lines(), ["slow: start", "slow: end", "later: own"]);
    assert_eq!(w.state().stages["later"].summary.as_deref(), Some("done at its turn"));
}

#[test]
fn a_failure_ahead_is_tried_again_at_the_turn_and_fails_there_with_the_turns_message() {
    let w = World::new();
    let log = Log::default();
    let slow = Slow { log: &log, secs: 60, reboot: false };
    let later = Later { ahead_fails: true, own_fails: true, ..Later::new(&log, 5) };
    let (end, _) = timed(&w, &[&slow, &later], &overlapped(true));
    assert_eq!(end, End::Failed);
    assert!(log.position("slow: end") < log.position("later: own"), "{:?}", log.lines());
    let st = w.state();
    assert_eq!(st.stages["slow"].status, Status::Done);
    assert_eq!(st.stages["later"].last_error.as_deref(), Some("the registry refused: 503"));
}

#[test]
fn work_still_under_way_when_the_overlapping_stage_fails_stops_with_the_run() {
    let w = World::new();
    let log = Log::default();
    let failing = Fake { fail_first: 1, ..Fake::new("patch") };
    struct Overlapping<'f>(&'f Fake);
    #[async_trait]
    impl Stage for Overlapping<'_> {
        fn name(&self) -> &'static str {
            self.0.name()
        }
        fn inputs(&self, c: &Config, f: &mut Fingerprint) {
            self.0.inputs(c, f);
        }
        fn overlaps(&self) -> bool {
            true
        }
        async fn run(&self, cx: &Context<'_>) -> Result<Outcome> {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.0.run(cx).await
        }
    }
    let later = Later::new(&log, 3600);
    let (end, took) = timed(&w, &[&Overlapping(&failing), &later], &overlapped(true));
    assert_eq!(end, End::Failed);
    assert!(took < Duration::from_secs(2), "waited for the work ahead: {took:?}");
    assert_eq!(log.lines(), ["later: ahead start"]);
    assert!(!w.state().stages.contains_key("later"));
}

#[test]
fn a_success_ahead_of_a_reboot_is_kept_and_taken_in_the_next_boot() {
    let w = World::new();
    let log = Log::default();
    let (slow, later) = (Slow { log: &log, secs: 60, reboot: true }, Later::new(&log, 10));
    let (end, _) = timed(&w, &[&slow, &later], &overlapped(true));
    assert_eq!(end, End::RebootRequired);
    let kept = w.state().ahead;
    assert_eq!(kept["later"].summary.as_deref(), Some("done ahead"), "{kept:?}");
    let first_boot = w.node_now().boot_id;

    w.boot("second-boot");
    let (end, _) = timed(&w, &[&slow, &later], &overlapped(true));
    assert_eq!(end, End::Done);
    // The work was not done again.
    assert_eq!(log.lines().iter().filter(|l| *l == "later: ahead start").count(), 1, "{:?}", log.lines());
    assert!(!log.lines().contains(&"later: own".to_owned()), "{:?}", log.lines());
    let rec = &w.state().stages["later"];
    assert_eq!(rec.details["later_done_ahead"], first_boot.as_str());
}
