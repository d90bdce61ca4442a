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
