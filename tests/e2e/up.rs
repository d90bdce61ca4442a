//! `node-init up` and `down` against the MAAS API stand-in: a 1- and a
//! 3-node cluster come up (init deployed first, the VIP reserved, every
//! node's user data checked as the node reads it, peers filled); what MAAS
//! lacks stops `up` before it changes anything; a failed deployment and a
//! node-init failure are named with MAAS's or node-init's words; a run
//! killed mid-way and run again allocates and reserves nothing twice; and
//! `down` gives back exactly what `up` took.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use node_init_tests::maas::{Maas, MachineSpec, Script};
use node_init_tests::net::Background;
use serde_json::Value;

const KEY: &str = "Uq7consumerKey2k9A:Tk4tokenKey8fHq2W:S3cr3tUpTokenSecretWithLength99";
const VIP: &str = "10.11.12.100";

struct World {
    _bg: Background,
    maas: Maas,
    dir: tempfile::TempDir,
}

impl World {
    /// A MAAS with the machines' subnet (dynamic range .200-.250), the
    /// uploaded image `custom/pcg`, and `machines`.
    fn new(machines: Vec<MachineSpec>) -> Self {
        let bg = Background::new();
        let maas = Maas::start(&bg, KEY);
        maas.add_subnet("10.11.12.0/24", Some(("10.11.12.200", "10.11.12.250")));
        maas.seed_image("custom/pcg");
        maas.timing(Duration::from_millis(300), Duration::from_millis(40));
        for m in machines {
            maas.add_machine(m);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config = "dns: {domain: maas}\nkubernetes:\n  endpoint: 10.11.12.100:6443\n  version: v1.31.4\n";
        std::fs::write(dir.path().join("cluster.yaml"), config).expect("config");
        Self { _bg: bg, maas, dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("pcg")
    }

    fn command(&self, sub: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(node_init_tests::bin());
        let (url, state) = (self.maas.url(), self.state().display().to_string());
        cmd.args([sub, "--maas", &url, "--state", &state]);
        if sub == "up" {
            let config = self.dir.path().join("cluster.yaml").display().to_string();
            cmd.args(["--config", &config, "--interval", "100ms"]);
            if !extra.contains(&"--timeout") {
                cmd.args(["--timeout", "40s"]);
            }
        }
        cmd.args(extra)
            .env_clear()
            .env("PATH", node_init_tests::PATH)
            .env("NODE_INIT_LOG", "info")
            .env("MAAS_API_KEY", KEY);
        cmd
    }

    fn run(&self, sub: &str, extra: &[&str]) -> Output {
        let out = node_init_tests::output(&mut self.command(sub, extra));
        let all = text(&out);
        for part in KEY.split(':') {
            assert!(!all.contains(part), "a part of the API key reached the output:\n{all}");
        }
        out
    }

    fn count(&self, op: &str) -> usize {
        self.maas.operations().iter().filter(|o| o.starts_with(op)).count()
    }
}

fn machines(n: usize) -> Vec<MachineSpec> {
    (1..=n).map(|i| MachineSpec::pcg(&format!("node{i}"), &format!("10.11.12.{}", 20 + i))).collect()
}

fn text(out: &Output) -> String {
    format!("{}{}", node_init_tests::text(&out.stdout), node_init_tests::text(&out.stderr))
}

fn state(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).expect("state.json")).expect("JSON")
}

#[test]
fn a_one_node_cluster_comes_up_from_the_custom_image_with_the_vip_reserved() {
    let w = World::new(machines(2));
    let started = Instant::now();
    let out = w.run("up", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    let ops = w.maas.operations();
    let init = &w.maas.machines()[0];
    assert_eq!(
        ops,
        [format!("reserve {VIP}"), format!("allocate {}", init.system_id), format!("deploy {}", init.system_id)]
    );
    let (ip, host) = &w.maas.reservations()[0];
    assert!(ip == VIP && host.starts_with("pcg-vip-"), "{ip} {host}");
    let d = &init.deploys[0];
    assert_eq!((d.osystem.as_str(), d.distro_series.as_str()), ("custom", "pcg"));
    assert_eq!(d.config["kubernetes"]["role"], "init");
    assert_eq!(d.config["kubernetes"]["peers"], serde_json::json!([]));
    assert!(d.config["kubernetes"]["ca"]["key"].as_str().is_some_and(|k| k.contains("PRIVATE KEY")));
    assert!(init.agent_name.starts_with("node-init-up/"), "{}", init.agent_name);
    assert_eq!(w.maas.machines()[1].status, "Ready", "the second machine was touched");
    let stdout = node_init_tests::text(&out.stdout);
    assert!(stdout.contains("node1") && stdout.contains(&init.system_id) && stdout.contains("done"), "{stdout}");
    assert_eq!(node_init_tests::mode(&w.state().join("secrets/ca.key")), 0o600);
    assert_eq!(state(&w.state())["machines"][0]["outcome"], "done");
    assert!(w.maas.fleet_violations().is_empty(), "{:?}", w.maas.fleet_violations());
    assert!(w.maas.auth_failures().is_empty(), "{:?}", w.maas.auth_failures());
}

#[test]
fn a_three_node_cluster_deploys_the_init_node_first_and_fills_every_nodes_peers() {
    // node2 has a static address; the others get theirs from MAAS only
    // when their deployment starts, and are left out of the peers of a
    // node deployed before that.
    let mut ms = machines(4);
    ms[1].static_ip = true;
    let w = World::new(ms);
    let out = w.run("up", &["--nodes", "3", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["ok"], true);
    let nodes = report["nodes"].as_array().expect("nodes");
    let roles: Vec<&str> = nodes.iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["init", "control-plane", "control-plane"]);
    assert!(nodes.iter().all(|n| n["outcome"] == "done" && n["stage"] == "done"), "{report:#}");
    let deploys: Vec<String> = w.maas.operations().into_iter().filter(|o| o.starts_with("deploy ")).collect();
    let ms = w.maas.machines();
    assert_eq!(deploys[0], format!("deploy {}", ms[0].system_id), "the init node was not deployed first");
    assert_eq!((w.count("allocate"), w.count("reserve"), deploys.len()), (3, 1, 3));
    // node1 is deployed before the others, so they know its address;
    // node3's comes only with its own deployment.
    let peers_of = [vec!["10.11.12.22"], vec!["10.11.12.21"], vec!["10.11.12.21", "10.11.12.22"]];
    for (i, m) in ms.iter().take(3).enumerate() {
        let k = &m.deploys[0].config["kubernetes"];
        let peers: Vec<&str> = k["peers"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(peers, peers_of[i], "{}", m.hostname);
        assert_eq!(k["endpoint"], "10.11.12.100:6443");
        assert!(k["token"].as_str().is_some() && k["certificate_key"].as_str().is_some());
        assert_eq!(k["ca"].get("key").is_some(), i == 0, "only the init node holds the CA key");
    }
    assert!(ms[3].deploys.is_empty() && ms[3].status == "Ready");
    let err = node_init_tests::text(&out.stderr);
    assert!(err.contains("node3 (m03x21q) has no address in MAAS yet"), "{err}");
    let addresses: Vec<&str> = nodes.iter().map(|n| n["address"].as_str().unwrap_or("-")).collect();
    assert_eq!(addresses, ["10.11.12.21", "10.11.12.22", "10.11.12.23"], "the table lacks an address MAAS assigned");
}

#[test]
fn too_few_matching_machines_stop_up_before_it_allocates_or_reserves_anything() {
    let mut ms = machines(3);
    ms[1].cpu_count = 2;
    let w = World::new(ms);
    let out = w.run("up", &["--nodes", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = node_init_tests::text(&out.stderr);
    assert!(
        err.contains("2 Ready machine(s) match, 3 needed") && err.contains("node2") && err.contains("2 CPUs < 4"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(w.maas.operations().is_empty(), "{:?}", w.maas.operations());
    assert!(!w.state().exists(), "up wrote its state before anything was done");
}

#[test]
fn a_vip_that_maas_has_given_to_something_else_is_refused() {
    let w = World::new(machines(1));
    w.maas.hold_ip(VIP, "printer.maas");
    let out = w.run("up", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = node_init_tests::text(&out.stderr);
    assert!(
        err.contains("kubernetes.endpoint") && err.contains("already allocated") && err.contains("printer.maas"),
        "{err}"
    );
    assert!(w.maas.operations().is_empty(), "{:?}", w.maas.operations());
}

#[test]
fn a_machine_that_fails_deployment_is_named_and_the_others_are_left_for_inspection() {
    let mut ms = machines(3);
    ms[2].script = Script::FailDeployment("curtin command install failed: disk /dev/sda not found".into());
    let w = World::new(ms);
    let out = w.run("up", &["--nodes", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = node_init_tests::text(&out.stderr);
    let failed = &w.maas.machines()[2];
    assert!(err.contains(&format!("node3 ({}, control-plane) failed at deployment", failed.system_id)), "{err}");
    assert!(err.contains("disk /dev/sda not found"), "{err}");
    assert!(err.contains("node-init down --maas") && err.contains("run `node-init up` again"), "{err}");
    let statuses: Vec<String> = w.maas.machines().iter().map(|m| m.status.clone()).collect();
    assert_eq!(statuses, ["Deployed", "Deployed", "Failed deployment"]);
    assert_eq!(w.count("release"), 0, "up released something");
}

#[test]
fn a_node_whose_node_init_fails_at_kubernetes_is_shown_with_its_words() {
    let mut ms = machines(1);
    let why =
        "cluster CA is not pinned: cluster-info's CA is sha256:1c42, kubernetes.ca_cert_hashes allows sha256:eeee";
    ms[0].script = Script::FailAt { stage: "kubernetes".into(), description: why.into() };
    let w = World::new(ms);
    let out = w.run("up", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = node_init_tests::text(&out.stderr);
    assert!(err.contains("node1") && err.contains("failed at kubernetes") && err.contains(why), "{err}");
    assert!(node_init_tests::text(&out.stdout).contains("kubernetes (failed)"), "{}", text(&out));
    assert_eq!(w.maas.machines()[0].status, "Deployed");
}

#[test]
fn up_killed_mid_way_and_run_again_allocates_and_reserves_nothing_twice() {
    let w = World::new(machines(3));
    w.maas.timing(Duration::from_secs(2), Duration::from_millis(40));
    let mut child = w.command("up", &["--nodes", "3"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("up");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "up never got to deploying");
        if w.count("deploy") == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!((w.count("allocate"), w.count("reserve")), (3, 1));
    let out = w.run("up", &["--nodes", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!((w.count("allocate"), w.count("reserve"), w.count("deploy")), (3, 1, 3), "{:?}", w.maas.operations());
    assert!(w.maas.machines().iter().all(|m| m.deploys.len() == 1));
}

#[test]
fn down_releases_every_machine_and_the_vip_and_nothing_else() {
    let w = World::new(machines(4));
    w.maas.hold_ip("10.11.12.9", "switch.maas");
    let out = w.run("up", &["--nodes", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = w.run("down", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let ms = w.maas.machines();
    for m in &ms[..3] {
        assert!(matches!(m.status.as_str(), "Releasing" | "Ready"), "{}: {}", m.hostname, m.status);
        assert!(m.release_comments[0].starts_with("node-init down: releasing cluster"), "{:?}", m.release_comments);
    }
    assert!(ms[3].release_comments.is_empty() && ms[3].status == "Ready");
    assert!(w.maas.reservations().is_empty());
    assert_eq!((w.count("release "), w.count("release-ip")), (3, 1));
    // The state says so; a second down finds nothing to do and an up with
    // this state is refused.
    assert!(state(&w.state())["down"].is_string());
    let again = w.run("down", &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(w.count("release"), 4, "{:?}", w.maas.operations());
    let up = w.run("up", &["--nodes", "3"]);
    assert_eq!(up.status.code(), Some(2), "{}", text(&up));
}

#[test]
fn bad_input_exits_2_naming_the_flag_or_key_and_asks_maas_nothing() {
    let w = World::new(machines(1));
    let cluster = w.dir.path().join("cluster.yaml");
    for (extra, config, why) in [
        (vec!["--nodes", "2"], None, "--nodes"),
        (vec!["--image", "pcg"], None, "--image"),
        (vec!["--api-key", "abc:def"], None, "--api-key"),
        (vec![], Some("kubernetes:\n  role: init\n  endpoint: 10.11.12.100:6443\n"), "kubernetes.role"),
        (vec![], Some("kubernetes:\n  endpoint: api.maas:6443\n"), "kubernetes.endpoint"),
        (vec![], Some("kubernetes:\n  endpoint: 10.11.12.100:6443\n  pod_cidr: 10.0.0.1/8\n"), "kubernetes.pod_cidr"),
    ] {
        if let Some(c) = config {
            std::fs::write(&cluster, c).unwrap();
        }
        let out = w.run("up", &extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(node_init_tests::text(&out.stderr).contains(why), "{extra:?}: {}", text(&out));
    }
    assert!(w.maas.requests().is_empty(), "{:?}", w.maas.requests());
    assert!(!w.state().exists());
}

/// Runs `up` until `ops` operations named `op` reached MAAS, then kills it.
fn kill_after(w: &World, op: &str, ops: usize, extra: &[&str]) {
    let mut child = w.command("up", extra).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("up");
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.count(op) < ops {
        assert!(Instant::now() < deadline, "up never sent {op}: {:?}", w.maas.operations());
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn a_reserve_and_an_allocation_whose_answers_a_kill_lost_are_found_again_not_repeated() {
    let w = World::new(machines(3));
    // MAAS reserves the VIP, but up is killed before the answer comes.
    w.maas.answer_late("reserve", Duration::from_millis(1500));
    kill_after(&w, "reserve", 1, &["--nodes", "3"]);
    assert_eq!(state(&w.state())["vip_state"], "reserving");
    w.maas.answer_late("reserve", Duration::ZERO);
    // Then MAAS allocates the second machine and up is killed again.
    w.maas.answer_late("allocate", Duration::from_millis(1500));
    kill_after(&w, "allocate", 2, &["--nodes", "3"]);
    assert_eq!(state(&w.state())["machines"].as_array().map(Vec::len), Some(1));
    w.maas.answer_late("allocate", Duration::ZERO);
    let out = w.run("up", &["--nodes", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!((w.count("reserve"), w.count("allocate"), w.count("deploy")), (1, 3, 3), "{:?}", w.maas.operations());
    let recorded: Vec<String> = state(&w.state())["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["system_id"].as_str().unwrap().to_owned())
        .collect();
    let ids: Vec<String> = w.maas.machines().iter().map(|m| m.system_id.clone()).collect();
    assert_eq!(recorded, ids, "the machine allocated under the lost answer was not taken back into the state");
}

#[test]
fn a_node_that_never_reports_ends_the_run_at_its_timeout_with_the_stage_it_waits_in() {
    let mut ms = machines(1);
    ms[0].script = Script::Silent;
    let w = World::new(ms);
    let started = Instant::now();
    let out = w.run("up", &["--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let err = node_init_tests::text(&out.stderr);
    assert!(err.contains("--timeout 3s passed while waiting for node1 (Deployed)"), "{err}");
}

#[test]
fn down_leaves_alone_a_machine_released_behind_its_back_and_taken_by_someone_else() {
    let w = World::new(machines(3));
    let out = w.run("up", &["--nodes", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let taken = w.maas.machines()[1].system_id.clone();
    w.maas.take_over(&taken);
    let out = w.run("down", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = node_init_tests::text(&out.stderr);
    assert!(err.contains(&format!("node2 ({taken}) no longer carries this cluster's agent_name")), "{err}");
    let ms = w.maas.machines();
    assert!(ms[1].release_comments.is_empty() && ms[1].status == "Allocated", "{:?}", ms[1]);
    assert!(ms[0].release_comments.len() == 1 && ms[2].release_comments.len() == 1);
    assert!(w.maas.reservations().is_empty(), "the VIP was kept");
    // And `up` with that state will not deploy onto it either.
    let up = w.run("up", &["--nodes", "3"]);
    assert_eq!(up.status.code(), Some(2), "{}", text(&up));
}

#[test]
fn a_machine_taken_by_someone_else_mid_way_stops_up_with_the_ways_on_and_down_cleans_up() {
    let w = World::new(machines(3));
    // While MAAS reserves the VIP, someone else allocates the third machine.
    w.maas.answer_late("reserve", Duration::from_millis(800));
    let child = w.command("up", &["--nodes", "3"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("up");
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.count("reserve") == 0 {
        assert!(Instant::now() < deadline, "up never reserved");
        std::thread::sleep(Duration::from_millis(10));
    }
    let third = w.maas.machines()[2].system_id.clone();
    w.maas.take_over(&third);
    let out = child.wait_with_output().expect("up");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = node_init_tests::text(&out.stderr);
    assert!(err.contains("MAAS allocated 2 of 3 machines, then none matched: No available machine"), "{err}");
    assert!(err.contains("two ways on") && err.contains("node-init down --maas"), "{err}");
    let out = w.run("down", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let ms = w.maas.machines();
    assert!(ms[..2].iter().all(|m| m.release_comments.len() == 1), "{ms:?}");
    assert!(ms[2].release_comments.is_empty() && ms[2].status == "Allocated");
    assert!(w.maas.reservations().is_empty());
}

#[test]
fn every_problem_on_the_maas_side_is_named_at_once_before_anything_changes() {
    let w = World::new(machines(1));
    let config = "kubernetes:\n  endpoint: 10.11.12.210:6443\n  pod_cidr: 10.11.0.0/16\n";
    std::fs::write(w.dir.path().join("cluster.yaml"), config).unwrap();
    let out = w.run("up", &["--image", "custom/pcg-next"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = node_init_tests::text(&out.stderr);
    for why in [
        "--image custom/pcg-next: MAAS has no uploaded image of that name (uploaded: pcg)",
        "kubernetes.pod_cidr 10.11.0.0/16 overlaps MAAS subnet 10.11.12.0/24",
        "the VIP 10.11.12.210 is inside the dynamic range 10.11.12.200-10.11.12.250",
    ] {
        assert!(err.contains(why), "{why:?} missing in:\n{err}");
    }
    assert!(w.maas.operations().is_empty() && !w.state().exists());
}
