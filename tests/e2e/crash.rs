//! Killed at any instant, a rerun converges: the real binary runs the
//! pipeline under `--root` and is SIGKILLed at 50 moments spread over an
//! uninterrupted run, placed by its log lines (`src/kill.rs`); each time a
//! rerun must leave exactly the files of an uninterrupted run, no temp
//! file, and a settled state. `crash_stages.rs` does the same over every
//! stage in the real Debian root.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use node_init_tests::kill;
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
    c.env("NODE_INIT_LOG", "debug").stdin(Stdio::null());
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
    let (reference, cfg) = prepared();
    let (timeline, status) = kill::run_to_end(&mut command(&reference, &cfg));
    assert_eq!(status.code(), Some(0), "{}", timeline.text());
    let want_files = files(&reference);
    let want_state = stage_statuses(&reference);

    let mut interrupted = 0;
    for (i, m) in timeline.moments(TRIALS).into_iter().enumerate() {
        let (root, cfg) = prepared();
        let k = kill::kill_at(&mut command(&root, &cfg), root.path(), m);
        interrupted += u32::from(k.landed);
        let rerun = command(&root, &cfg).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
        assert_eq!(rerun.code(), Some(0), "trial {i}: rerun failed");
        let got = files(&root);
        let temps: Vec<_> = got.keys().filter(|p| p.to_string_lossy().contains("node-init-tmp")).collect();
        assert!(temps.is_empty(), "trial {i} ({m:?}, {k:?}): temp files left: {temps:?}");
        assert_eq!(got, want_files, "trial {i} ({m:?}, {k:?}): files differ from an uninterrupted run");
        assert_eq!(stage_statuses(&root), want_state, "trial {i}");
    }
    eprintln!("{interrupted} of {TRIALS} kills landed while node-init ran ({} log lines)", timeline.lines.len());
    assert!(interrupted >= TRIALS * 9 / 10, "only {interrupted} of {TRIALS} kills landed while node-init was running");
}
