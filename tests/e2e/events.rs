//! What MAAS hears from `node-init run`: the real binary under `--root`
//! with curtin's reporting files pointing at the MAAS metadata stand-in.
//! A run that succeeds, one that reboots (the boot id changed under the
//! root is the reboot), one whose stage fails (FAIL with the log and the
//! status attached, no secret anywhere), and a MAAS that is down, slow or
//! refusing: bounded, and `status` says what is still pending or given up.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use node_init_tests::apt::prepare_upgrade;
use node_init_tests::cluster::Secrets;
use node_init_tests::maas::{Metadata, NodeStatus};
use node_init_tests::net::Background;
use node_init_tests::rootfs::extracted;
use node_init_tests::*;
use serde_json::Value;

const SYSTEM_ID: &str = "xk4pfa";
const NODE_KEY: &str = "Cq7nodeConsumer2k9A:Tk3nodeTokenKey8fHq:S3cr3tNodeTokenSecret9Vz";
/// What the budget allows (node-init's RUN_BUDGET, 20 s) plus the run's
/// own work and a loaded machine's slack.
const BOUND: Duration = Duration::from_secs(30);

fn run(root: &std::path::Path, config: &str, log: &str) -> Output {
    let cfg = root.join("tmp/node-init-test.yaml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, config).unwrap();
    let out = output(
        Command::new(bin())
            .args(["run", "--root", root.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
            .env_clear()
            .env("PATH", PATH)
            .env("NODE_INIT_LOG", log),
    );
    // A run leaves its config out of the root it is asked about.
    std::fs::remove_file(&cfg).unwrap();
    out
}

fn status_json(root: &std::path::Path) -> Value {
    let out = node_init(&["status", "--root", root.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_table(root: &std::path::Path) -> String {
    text(&node_init(&["status", "--root", root.to_str().unwrap()]).stdout)
}

/// "event_type name" of each message MAAS accepted.
fn names(m: &Metadata) -> Vec<String> {
    m.accepted()
        .iter()
        .map(|e| format!("{} {}", e["event_type"].as_str().unwrap(), e["name"].as_str().unwrap()))
        .collect()
}

fn stage_pairs(stages: &[&str]) -> Vec<String> {
    stages.iter().flat_map(|s| [format!("start node-init/{s}"), format!("finish node-init/{s}")]).collect()
}

fn maas_world() -> (Background, Metadata, FakeRoot) {
    let bg = Background::new();
    let m = Metadata::start(&bg, SYSTEM_ID, NODE_KEY);
    let root = FakeRoot::new();
    m.curtin_files(root.path());
    (bg, m, root)
}

#[test]
fn a_run_that_succeeds_reports_every_stage_and_announces_done_with_a_start() {
    let (_bg, m, root) = maas_world();
    let out = run(root.path(), "hostname: node1.maas\nproxy:\n  http: http://10.0.0.1:3128\n", "info");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let mut want = vec!["start node-init".to_owned()];
    want.extend(stage_pairs(&["proxy", "host", "patch", "dns", "kubernetes"]));
    want.extend(["finish node-init".to_owned(), "start node-init/done".to_owned()]);
    assert_eq!(names(&m), want);
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    for e in m.accepted() {
        assert_eq!(e["origin"], "node-init");
        assert!(e["timestamp"].is_number(), "{e}");
        if e["event_type"] == "finish" {
            assert_eq!(e["result"], "SUCCESS", "{e}");
        }
    }
    let skipped =
        m.accepted().into_iter().find(|e| e["name"] == "node-init/patch" && e["event_type"] == "finish").unwrap();
    assert_eq!(skipped["description"], "patch: skipped: os.patch is false");

    // What an operator sees: the starts only, DEBUG, done last.
    let log = m.log();
    let actions: Vec<&str> = log.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "node-init",
            "node-init/proxy",
            "node-init/host",
            "node-init/patch",
            "node-init/dns",
            "node-init/kubernetes",
            "node-init/done"
        ]
    );
    assert!(log.iter().all(|l| l.level == "DEBUG" && l.kind == "Node status event"), "{log:?}");
    let done = &log.last().unwrap().description;
    assert!(
        done.starts_with("'node-init' node-init done in ") && done.contains("proxy done, host skipped, patch skipped"),
        "{done}"
    );

    let table = status_table(root.path());
    assert!(table.contains("maas: 13 events delivered, 0 pending, 0 gave up"), "{table}");
    // Nothing left to do: a second run says nothing more.
    let out = run(root.path(), "hostname: node1.maas\nproxy:\n  http: http://10.0.0.1:3128\n", "info");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(m.accepted().len(), 13, "{:?}", names(&m));
}

#[test]
fn a_reboot_is_announced_before_it_happens_and_the_rest_is_reported_after_it() {
    let bg = Background::new();
    let m = Metadata::start(&bg, SYSTEM_ID, NODE_KEY);
    let root = extracted();
    let r = root.path();
    prepare_upgrade(r);
    m.curtin_files(r);
    set_boot_id(r, "aaaaaaaa-0000-0000-0000-000000000001");
    let out = run(r, "os:\n  patch: true\n", "info");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let before = names(&m);
    assert_eq!(
        before,
        [
            "start node-init",
            "start node-init/proxy",
            "finish node-init/proxy",
            "start node-init/host",
            "finish node-init/host",
            "start node-init/patch",
            "start node-init/reboot"
        ]
    );
    let announced = m.log().last().unwrap().description.clone();
    assert!(
        announced.starts_with("'node-init' reboot required for patch: ")
            && announced.contains("reboot-required exists")
            && announced.contains("not rebooting (--root)"),
        "{announced}"
    );

    set_boot_id(r, "bbbbbbbb-0000-0000-0000-000000000002");
    let out = run(r, "os:\n  patch: true\n", "info");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let after: Vec<String> = names(&m).split_off(before.len());
    let mut want = vec!["finish node-init/patch".to_owned()];
    want.extend(stage_pairs(&["dns", "kubernetes"]));
    want.extend(["finish node-init".to_owned(), "start node-init/done".to_owned()]);
    assert_eq!(after, want, "one run start for both boots, the patch finished after the reboot");
    let patch =
        m.accepted().into_iter().find(|e| e["name"] == "node-init/patch" && e["event_type"] == "finish").unwrap();
    let d = patch["description"].as_str().unwrap();
    assert!(
        d.contains("1 package upgraded")
            && d.ends_with("resumed after the reboot out of boot aaaaaaaa-0000-0000-0000-000000000001"),
        "{d}"
    );
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    // MAAS's log is in the order things happened.
    let times: Vec<f64> = m.log().iter().map(|l| l.created).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// A config that holds every kind of secret node-init knows.
fn secret_config(s: &Secrets) -> (String, Vec<String>) {
    let token = s.get("token");
    let key = std::fs::read_to_string(s.dir.join("ca.key")).unwrap();
    let config = format!(
        "hostname: node1.maas\nproxy:\n  http: http://ops:Pr0xy%2FPassw0rd@10.0.0.1:3128\n  https: http://ops:Pr0xy%2FPassw0rd@10.0.0.1:3128\n\
         kubernetes:\n  role: init\n  endpoint: 10.11.12.100:6443\n  version: v1.31.4\n  token: {token}\n  certificate_key: {}\n  \
         vip: {{interface: eth0}}\n  ca:\n    cert: |\n{}    key: |\n{}",
        s.get("certificate-key"),
        yaml_block(&s.get("ca.crt"), 6),
        yaml_block(&key, 6),
    );
    let mut secrets =
        vec![token[7..].to_owned(), s.get("certificate-key"), "Pr0xy%2FPassw0rd".into(), "Pr0xy/Passw0rd".into()];
    secrets.extend(key.lines().filter(|l| !l.starts_with("-----") && l.len() > 16).map(str::to_owned));
    secrets.extend(NODE_KEY.split(':').map(str::to_owned));
    (config, secrets)
}

#[test]
fn a_failed_stage_is_a_fail_with_the_log_and_the_status_and_no_secret() {
    let (_bg, m, root) = maas_world();
    let secrets = Secrets::new();
    let (config, secret_values) = secret_config(&secrets);
    let out = run(root.path(), &config, "debug");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let status = status_json(root.path());
    let failed = status["stages"].as_array().unwrap().iter().find(|s| s["status"] == "failed").expect("a failed stage");
    let stage = failed["name"].as_str().unwrap();
    let error = failed["last_error"].as_str().unwrap().lines().next().unwrap();
    let accepted = m.accepted();
    let fail =
        accepted.iter().find(|e| e["name"] == format!("node-init/{stage}") && e["event_type"] == "finish").unwrap();
    assert_eq!(fail["result"], "FAIL");
    assert_eq!(fail["description"], format!("{stage}: {error}"));
    let whole = accepted.last().unwrap();
    assert_eq!((whole["name"].as_str(), whole["result"].as_str()), (Some("node-init"), Some("FAIL")));
    assert_eq!(whole["description"], format!("{stage} failed: {error}"));

    // MAAS keeps both failures, as errors.
    let errors: Vec<_> = m.log().into_iter().filter(|l| l.level == "ERROR").collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|l| l.kind == "Node post-installation failure"));
    assert_eq!(errors[0].description, format!("'node-init' {stage}: {error}"));

    // Both files, as MAAS decoded them.
    let files = m.files();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["node-init.log", "node-init-status.json"]);
    let log = String::from_utf8(files[0].data.clone()).unwrap();
    assert!(log.contains(&format!("stage{{stage=\"{stage}\"}}")) && log.contains("failed"), "{log}");
    assert_eq!(files[0].compression.as_deref(), Some("bzip2"), "a log of {} bytes is sent compressed", log.len());
    let sent: Value = serde_json::from_slice(&files[1].data).unwrap();
    let sent_failed = sent["stages"].as_array().unwrap().iter().find(|s| s["name"] == stage).unwrap();
    assert_eq!(sent_failed["status"], "failed");

    // No secret in any message, file, the status or the log on stderr.
    let everything = format!(
        "{}\n{log}\n{}\n{}\n{}",
        accepted.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&files[1].data),
        status,
        text(&out.stderr)
    );
    for (i, s) in secret_values.iter().enumerate() {
        assert!(!everything.contains(s.as_str()), "secret #{i} of the config reached MAAS or the output");
    }
    assert!(m.violations().is_empty(), "{:?}", m.violations());
}

/// The region's front end refuses a body over its limit with 413. The
/// failure's event, which carries the log and the status, goes again at
/// once without them, so MAAS still shows the stage that failed; an event
/// refused even so is given up at once, asked once, and the run goes on
/// reporting the rest.
#[test]
fn an_event_the_region_refuses_with_a_4xx_is_given_up_at_once_and_one_too_large_for_its_files_goes_without_them() {
    let (_bg, m, root) = maas_world();
    m.max_body(1024);
    let secrets = Secrets::new();
    let (config, _) = secret_config(&secrets);
    let out = run(root.path(), &config, "debug");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let accepted = m.accepted();
    let fail = accepted.iter().find(|e| e["result"] == "FAIL" && e["name"] != "node-init").expect("the stage's FAIL");
    assert!(fail.get("files").is_none(), "{fail}");
    assert_eq!(m.requests().len(), accepted.len() + 1, "one 413, then the same event without files");
    assert!(m.files().is_empty());
    let maas = status_json(root.path())["maas"].clone();
    assert_eq!((maas["pending"].as_u64(), maas["gave_up"].as_u64()), (Some(0), Some(0)), "{maas}");
    assert!(text(&out.stderr).contains("sending it without them"), "{}", text(&out.stderr));

    // A limit no event fits: each is refused once and given up.
    let (_bg, m, root) = maas_world();
    m.max_body(64);
    let out = run(root.path(), "hostname: node1.maas\nos: {patch: false}\n", "info");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let maas = status_json(root.path())["maas"].clone();
    assert_eq!((maas["gave_up"].as_u64(), maas["pending"].as_u64()), (Some(13), Some(0)), "{maas}");
    assert_eq!(m.requests().len(), 13, "a 413 is not retried: {:?}", m.requests());
    assert!(m.accepted().is_empty());
    let table = status_table(root.path());
    assert!(table.contains("13 gave up") && table.contains("413"), "{table}");
}

#[test]
fn a_dead_endpoint_costs_at_most_the_bound_and_leaves_the_events_pending() {
    let (_bg, _m, root) = maas_world();
    // Nothing listens on this port any more: every connection is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = root.path().join("etc/cloud/cloud.cfg.d/90_maas_cloud_init_reporting.cfg");
    let text_cfg = std::fs::read_to_string(&cfg).unwrap();
    let url = text_cfg.lines().find_map(|l| l.trim().strip_prefix("endpoint: ")).unwrap().to_owned();
    std::fs::write(&cfg, text_cfg.replace(&url, &format!("http://{dead}/MAAS/metadata/status/{SYSTEM_ID}"))).unwrap();

    let started = Instant::now();
    let out = run(root.path(), "hostname: node1.maas\n", "info");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "reporting never fails a run: {}", text(&out.stderr));
    assert!(took < BOUND, "{took:?}");
    let maas = &status_json(root.path())["maas"];
    assert_eq!((maas["delivered"].as_u64(), maas["pending"].as_u64()), (Some(0), Some(13)), "{maas}");
    let table = status_table(root.path());
    assert!(table.contains("maas: 0 events delivered, 13 pending, 0 gave up"), "{table}");
    assert!(
        table.contains("maas: pending start node-init: node-init started in boot")
            && table.contains("Connection refused"),
        "{table}"
    );
}

#[test]
fn a_slow_endpoint_costs_at_most_the_bound() {
    let (_bg, m, root) = maas_world();
    m.slow(Duration::from_secs(120));
    let started = Instant::now();
    let out = run(root.path(), "hostname: node1.maas\n", "info");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(took < BOUND && took >= Duration::from_secs(15), "{took:?}");
    let table = status_table(root.path());
    assert!(table.contains("13 pending") && table.contains("no answer within "), "{table}");
    // One full round of tries, then a probe per transition until the budget was spent.
    assert!(m.posts() <= 3 + 13, "{}", m.posts());
}

#[test]
fn undelivered_events_go_out_in_a_later_run_and_one_that_failed_in_three_runs_is_given_up() {
    let (_bg, m, root) = maas_world();
    m.unavailable(usize::MAX);
    let out = run(root.path(), "hostname: node1.maas\nos: {patch: false}\n", "info");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(status_json(root.path())["maas"]["pending"], 13);

    // Two more runs with MAAS still away: the first event has now failed in
    // three runs and is given up; the others wait.
    for boot in ["22222222-0000-0000-0000-000000000002", "33333333-0000-0000-0000-000000000003"] {
        set_boot_id(root.path(), boot);
        assert_eq!(run(root.path(), "hostname: node1.maas\nos: {patch: false}\n", "info").status.code(), Some(0));
    }
    let maas = status_json(root.path())["maas"].clone();
    assert_eq!((maas["gave_up"].as_u64(), maas["pending"].as_u64()), (Some(1), Some(12)), "{maas}");
    assert_eq!(maas["events"][0]["name"], "node-init");
    assert!(status_table(root.path()).contains("maas: gave-up start node-init: "), "{}", status_table(root.path()));

    // MAAS is back: the next run (a new boot, nothing left to do) delivers
    // the rest, in the order they happened.
    m.unavailable(0);
    set_boot_id(root.path(), "44444444-0000-0000-0000-000000000004");
    assert_eq!(run(root.path(), "hostname: node1.maas\nos: {patch: false}\n", "info").status.code(), Some(0));
    let mut want = stage_pairs(&["proxy", "host", "patch", "dns", "kubernetes"]);
    want.extend(["finish node-init".to_owned(), "start node-init/done".to_owned()]);
    assert_eq!(names(&m), want);
    let maas = &status_json(root.path())["maas"];
    assert_eq!(
        (maas["delivered"].as_u64(), maas["gave_up"].as_u64(), maas["pending"].as_u64()),
        (Some(12), Some(1), Some(0))
    );
    assert_eq!(m.status(), NodeStatus::Deployed);
}
