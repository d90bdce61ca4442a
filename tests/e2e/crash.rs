//! Killed at any instant, a rerun converges: the real binary runs the
//! pipeline under `--root` and is SIGKILLed at 50 moments spread over an
//! uninterrupted run's duration; each time a rerun must leave exactly the
//! files of an uninterrupted run, no temp file, and a settled state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use node_init_tests::*;

const CONFIG: &str = "proxy:\n  http: http://10.0.0.1:3128\n  https: http://10.0.0.1:3128\n  no_proxy: [maas.company.com, 10.10.0.0/16]\nhostname: node1.maas\n";
const TRIALS: u32 = 50;

fn prepared() -> (FakeRoot, tempfile::TempDir) {
    let root = FakeRoot::new();
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("config.yaml"), CONFIG).unwrap();
    (root, cfg)
}

fn command(root: &FakeRoot, cfg: &tempfile::TempDir) -> Command {
    let mut c = Command::new(bin());
    c.args(["run", "--root", &root.arg(), "--config"]).arg(cfg.path().join("config.yaml"));
    c.env("NODE_INIT_LOG", "debug").stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Every file as text; state.json and the done marker hold times that
/// differ run to run, and the fingerprint key is the node's own random
/// bytes, so only their presence counts (state is compared by stage status
/// below, the key by its length).
fn files(root: &FakeRoot) -> BTreeMap<PathBuf, String> {
    let mut s = root.snapshot();
    let key = s.get(&PathBuf::from("var/lib/node-init/fingerprint.key")).map(Vec::len);
    assert_eq!(key, Some(32), "the fingerprint key is missing or torn");
    for timed in ["var/lib/node-init/state.json", "var/lib/node-init/done", "var/lib/node-init/fingerprint.key"] {
        if let Some(v) = s.get_mut(&PathBuf::from(timed)) {
            v.clear();
        }
    }
    s.into_iter().map(|(k, v)| (k, text(&v))).collect()
}

fn stage_statuses(root: &FakeRoot) -> Vec<(String, String)> {
    state(root.path())["stages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, r)| (k.clone(), r["status"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn sigkill_at_50_moments_then_rerun_converges() {
    // The span to spread kills over: the fastest of five uninterrupted runs,
    // so a slow one (other tests share the machine) cannot push the kills
    // past the end of the runs they interrupt.
    let mut span = Duration::MAX;
    let mut reference = None;
    for _ in 0..5 {
        let (root, cfg) = prepared();
        let started = Instant::now();
        assert_eq!(command(&root, &cfg).status().unwrap().code(), Some(0));
        span = span.min(started.elapsed());
        reference = Some(root);
    }
    let reference = reference.unwrap();
    let span = span.max(Duration::from_millis(5));
    let want_files = files(&reference);
    let want_state = stage_statuses(&reference);

    let mut interrupted = 0;
    for i in 0..TRIALS {
        let (root, cfg) = prepared();
        let mut child = command(&root, &cfg).spawn().unwrap();
        std::thread::sleep(span * i / TRIALS);
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let rerun = command(&root, &cfg).status().unwrap();
        assert_eq!(rerun.code(), Some(0), "trial {i}: rerun failed");
        let got = files(&root);
        let temps: Vec<_> = got.keys().filter(|p| p.to_string_lossy().contains("node-init-tmp")).collect();
        assert!(temps.is_empty(), "trial {i}: temp files left: {temps:?}");
        assert_eq!(got, want_files, "trial {i}: files differ from an uninterrupted run");
        assert_eq!(stage_statuses(&root), want_state, "trial {i}");
    }
    assert!(interrupted >= TRIALS / 2, "only {interrupted} of {TRIALS} kills landed while node-init was running");
}
