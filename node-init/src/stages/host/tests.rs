//! The `host` stage against golden files under `tests/fixtures/host/`
//! (regenerate with `NODE_INIT_UPDATE_GOLDEN=1`), under `--root` in the
//! unit-test World, and live against [`Booted`]: systemd, the kernel and a
//! containerd that, like the real one, reads its config and environment
//! only when it starts.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::live::{Containerd, DROP_IN_DIR, Observed, SOCKET, UNIT, live_steps, restart_reason};
use super::*;
use crate::config::{self, values::KubeVersion};
use crate::pipeline::{End, Options};
use crate::root::Root;
use crate::runner::{Cmd, Output, Runner};
use crate::stages::proxy::{DROP_INS, ProxyStage};
use crate::testing::{DEBIAN, World};

const KUBE: &str = "kubernetes:\n  role: worker\n  endpoint: 10.11.12.100:6443\n  token: abcdef.0123456789abcdef\n  \
    ca_cert_hashes: [\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"]\n";
const V131: &str = "  version: v1.31.4\n";
const PROXY: &str = "proxy:\n  https: http://proxyuser:old-secret@10.0.0.1:3128\n";
/// What curtin leaves on a MAAS-deployed Ubuntu: root, the ESP, a swap file.
const CURTIN_FSTAB: &str = "# /etc/fstab: static file system information.\n\
    /dev/disk/by-uuid/6b8f3c1e-0d2a-4a8e-9a57-0f6a3c1d2e4b / ext4 defaults 0 1\n\
    # /boot/efi was on /dev/sda1 during curtin installation\n\
    /dev/disk/by-uuid/3C1A-2B7F\t/boot/efi\tvfat\tdefaults\t0\t1\n\
    /swap.img none swap sw 0 0\n";
const PROC_SWAPS_HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

fn cfg(doc: &str) -> Config {
    config::parse(doc, "test").unwrap()
}

fn golden(name: &str, actual: &str) {
    crate::testing::golden("host", name, actual);
}

/// A Debian root carrying containerd, with curtin's fstab.
fn image() -> World {
    let w = World::with_os(DEBIAN);
    w.write("/usr/lib/systemd/system/containerd.service", "[Service]\nExecStart=/usr/bin/containerd\n");
    w.write(FSTAB, CURTIN_FSTAB);
    w
}

fn changed(o: &Outcome) -> Vec<String> {
    let Outcome::Done(d) = o else { panic!("not done: {o:?}") };
    serde_json::from_value(d.details["changed"].clone()).unwrap()
}

fn detail(o: &Outcome, key: &str) -> serde_json::Value {
    let Outcome::Done(d) = o else { panic!("not done: {o:?}") };
    d.details.get(key).cloned().unwrap_or_default()
}

/// Every file and link under the root with its bytes or target; sockets
/// (containerd's, in the live tests) have no bytes to compare.
fn snapshot(w: &World) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let kind = std::fs::symlink_metadata(&p).unwrap().file_type();
            if kind.is_symlink() {
                out.push((p.clone(), format!("-> {}", std::fs::read_link(&p).unwrap().display())));
            } else if kind.is_dir() {
                walk(&p, out);
            } else if kind.is_file() {
                out.push((p.clone(), String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()));
            }
        }
    }
    let mut out = Vec::new();
    walk(w.root.base(), &mut out);
    out.sort();
    out
}

fn summary(o: &Outcome) -> &str {
    let Outcome::Done(d) = o else { panic!("not done: {o:?}") };
    d.summary.as_deref().unwrap_or_default()
}

// --- rendering ------------------------------------------------------------

#[test]
fn rendered_files_match_their_golden_files() {
    golden("modules-load.conf", &render::modules_load());
    golden("sysctl.conf", &render::sysctl_conf());
    let edit = render::fstab_without_swap(CURTIN_FSTAB);
    assert_eq!((edit.disabled, edit.swaps.as_slice()), (1, ["/swap.img".to_owned()].as_slice()));
    golden("fstab", &edit.text);
    let mirror = "mirror.corp:5000/k8s".parse().unwrap();
    for v in ["v1.30.9", "v1.31.4"] {
        let version: KubeVersion = v.parse().unwrap();
        let minor = &v[1..5];
        golden(&format!("containerd-{minor}.toml"), &render::containerd_config(&render::sandbox_image(None, version)));
        let with_mirror = render::containerd_config(&render::sandbox_image(Some(&mirror), version));
        golden(&format!("containerd-{minor}-mirror.toml"), &with_mirror);
    }
}

// --- under --root: files only ---------------------------------------------

#[test]
fn under_root_every_file_is_written_and_nothing_runs() {
    let w = image();
    let out = w.stage(&HostStage, &cfg(&format!("{KUBE}{V131}"))).unwrap();
    assert!(w.runner.calls().is_empty(), "ran {:?}", w.runner.argvs());
    assert_eq!(w.read(MODULES_LOAD), render::modules_load());
    assert_eq!(w.read(SYSCTL), render::sysctl_conf());
    assert_eq!(w.read(FSTAB), render::fstab_without_swap(CURTIN_FSTAB).text);
    assert!(w.read(CONTAINERD_CONFIG).contains("sandbox_image = \"registry.k8s.io/pause:3.10\""));
    let mask = std::fs::read_link(w.root.path("/etc/systemd/system").join("swap.img.swap")).unwrap();
    assert_eq!(mask, std::path::Path::new("/dev/null"), "the swap file's unit is masked");
    assert_eq!(
        summary(&out),
        "modules, sysctls, swap off (1 line in /etc/fstab), containerd config updated; \
        nothing run under --root: the image applies them when it boots"
    );
}

#[test]
fn without_a_version_kubeadm_in_the_image_is_asked() {
    let w = image();
    w.runner.answer(0, "v1.33.1\n", "");
    w.stage(&HostStage, &cfg(&format!("{KUBE}  image_repository: mirror.corp:5000/k8s\n"))).unwrap();
    assert_eq!(w.runner.argvs(), ["kubeadm version -o short"]);
    assert!(w.read(CONTAINERD_CONFIG).contains("sandbox_image = \"mirror.corp:5000/k8s/pause:3.10\""));
}

#[test]
fn a_rerun_writes_nothing_and_runs_nothing() {
    let w = image();
    let c = cfg(&format!("{KUBE}{V131}"));
    w.stage(&HostStage, &c).unwrap();
    let after = snapshot(&w);
    let again = w.stage(&HostStage, &c).unwrap();
    assert_eq!(snapshot(&w), after);
    assert!(changed(&again).is_empty(), "{:?}", changed(&again));
    assert!(w.runner.calls().is_empty());
}

#[test]
fn a_dry_run_plans_every_file_and_the_mask_and_changes_nothing() {
    let w = image();
    let before = snapshot(&w);
    let (end, plan) = w.run_with(&[&HostStage], &cfg(&format!("{KUBE}{V131}")), &Options::default(), false, true);
    assert_eq!(end, End::Done);
    assert_eq!(snapshot(&w), before);
    for want in [MODULES_LOAD, SYSCTL, FSTAB, CONTAINERD_CONFIG, "link /etc/systemd/system/swap.img.swap -> /dev/null"]
    {
        assert!(plan.iter().any(|l| l.contains(want)), "{want} missing from {plan:#?}");
    }
}

#[test]
fn a_containerd_config_node_init_did_not_write_is_kept_once() {
    let w = image();
    let packaged = "disabled_plugins = [\"cri\"]\n";
    w.write(CONTAINERD_CONFIG, packaged);
    let c = cfg(&format!("{KUBE}{V131}"));
    let out = w.stage(&HostStage, &c).unwrap();
    assert_eq!(w.read(CONTAINERD_BACKUP), packaged);
    assert!(changed(&out).contains(&CONTAINERD_BACKUP.to_owned()));
    assert!(!w.read(CONTAINERD_CONFIG).contains("disabled_plugins"));
    // A package upgrade lays down its own config again: replaced, and the
    // first backup, the operator's original, is not overwritten.
    w.write(CONTAINERD_CONFIG, "version = 2\n# from a package upgrade\n");
    let again = w.stage(&HostStage, &c).unwrap();
    assert_eq!(w.read(CONTAINERD_BACKUP), packaged);
    assert_eq!(changed(&again), [CONTAINERD_CONFIG]);
}

#[test]
fn without_a_kubernetes_section_the_stage_is_skipped_and_touches_nothing() {
    let w = image();
    let before = snapshot(&w);
    assert!(matches!(w.stage(&HostStage, &cfg(PROXY)).unwrap(), Outcome::Skipped(_)));
    assert_eq!(snapshot(&w), before);
}

#[test]
fn an_fstab_without_swap_is_left_byte_for_byte() {
    let w = image();
    let no_swap = "UUID=6b8f3c1e / ext4 defaults 0 1\n# /swap.img none swap sw 0 0\n";
    w.write(FSTAB, no_swap);
    let out = w.stage(&HostStage, &cfg(&format!("{KUBE}{V131}"))).unwrap();
    assert_eq!(w.read(FSTAB), no_swap);
    assert!(!changed(&out).iter().any(|p| p == FSTAB || p.ends_with(".swap")), "{:?}", changed(&out));
}

#[test]
fn an_image_without_containerd_is_refused_before_anything_is_written() {
    let w = World::with_os(DEBIAN);
    let before = snapshot(&w);
    let err = format!("{:#}", w.stage(&HostStage, &cfg(&format!("{KUBE}{V131}"))).unwrap_err());
    assert!(err.contains("the image must carry containerd, kubeadm, kubelet and kubectl"), "{err}");
    assert_eq!(snapshot(&w), before);
}

// --- the live plan, pure --------------------------------------------------

fn argvs(steps: &[Cmd]) -> Vec<String> {
    steps.iter().map(ToString::to_string).collect()
}

#[test]
fn a_first_boot_loads_sets_swaps_off_and_restarts_in_that_order() {
    let o = Observed {
        missing_modules: vec!["overlay", "br_netfilter"],
        sysctl_stale: true,
        swaps: vec!["/swap.img".into()],
        restart: Some("its config changed".into()),
    };
    assert_eq!(
        argvs(&live_steps(&o, SYSCTL)),
        [
            "modprobe overlay",
            "modprobe br_netfilter",
            "sysctl -p /etc/sysctl.d/99-node-init-kubernetes.conf",
            "swapoff -a",
            "systemctl daemon-reload",
            "systemctl restart containerd.service",
        ]
    );
    assert!(live_steps(&Observed::default(), SYSCTL).is_empty(), "nothing to do runs nothing");
}

#[test]
fn containerd_restarts_only_for_what_it_has_not_read() {
    let now = SystemTime::now();
    let running = Containerd { state: "active".into(), started: Some(now) };
    let drop_in = |age: i64| {
        let t = if age >= 0 { now - Duration::from_secs(age as u64) } else { now + Duration::from_secs(-age as u64) };
        vec![(format!("{DROP_IN_DIR}/node-init-proxy.conf"), t)]
    };
    assert_eq!(restart_reason(&running, false, &drop_in(10)), None);
    let newer = restart_reason(&running, false, &drop_in(-10)).unwrap();
    assert!(newer.contains("node-init-proxy.conf changed after it started"), "{newer}");
    assert!(restart_reason(&running, true, &drop_in(10)).is_some(), "a config written by this run");
    let stopped = Containerd { state: "failed".into(), started: None };
    assert_eq!(restart_reason(&stopped, false, &[]).as_deref(), Some("containerd is failed"));
}

// --- live, against a booted node ------------------------------------------

/// A booted node behind the runner: systemd loads drop-ins at
/// daemon-reload only, containerd takes the environment systemd loaded and
/// reads its config only when it (re)starts, and its socket answers a
/// moment after the restart; modprobe, sysctl and swapoff change the
/// kernel files under the root as the kernel would.
struct Booted {
    root: Root,
    calls: Mutex<Vec<String>>,
    daemon: Mutex<Daemon>,
    socket: Arc<Mutex<Option<UnixListener>>>,
}

struct Daemon {
    installed: bool,
    /// The drop-ins' environment as systemd last loaded it.
    loaded_env: Vec<String>,
    /// containerd's own environment and config, fixed at its start.
    env: Vec<String>,
    config: Option<String>,
    started_us: u64,
    restarts: u32,
}

fn monotonic_us() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

impl Booted {
    /// The node as it boots: no modules, forwarding off, curtin's swap file
    /// on, and containerd started a minute ago with whatever was there.
    fn new(w: &World) -> Self {
        w.write("/sys/module/.keep", "");
        w.write("/proc/sys/net/ipv4/ip_forward", "0\n");
        w.write("/proc/swaps", &format!("{PROC_SWAPS_HEADER}/swap.img  file\t\t4194300\t\t0\t\t-2\n"));
        let b = Self {
            root: w.root.clone(),
            calls: Mutex::default(),
            daemon: Mutex::new(Daemon {
                installed: true,
                loaded_env: Vec::new(),
                env: Vec::new(),
                config: None,
                started_us: 0,
                restarts: 0,
            }),
            socket: Arc::default(),
        };
        b.reload();
        b.start(Duration::ZERO);
        b.daemon.lock().unwrap().started_us -= 60_000_000;
        b
    }

    fn reload(&self) {
        let env = drop_in_env(&self.root);
        self.daemon.lock().unwrap().loaded_env = env;
    }

    fn start(&self, socket_after: Duration) {
        let _ = std::fs::remove_file(self.root.path(SOCKET));
        self.socket.lock().unwrap().take();
        let mut d = self.daemon.lock().unwrap();
        d.env = d.loaded_env.clone();
        d.config = self.root.read_string_opt(CONTAINERD_CONFIG).unwrap();
        d.started_us = monotonic_us();
        let (path, slot) = (self.root.path(SOCKET), self.socket.clone());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(socket_after);
            *slot.lock().unwrap() = Some(UnixListener::bind(&path).unwrap());
        });
    }

    /// `d` passes: containerd and every file under the root are that much
    /// older (the clock cannot be moved forward, so the past moves back).
    fn age(&self, d: Duration) {
        self.daemon.lock().unwrap().started_us -= d.as_micros() as u64;
        fn walk(dir: &Path, d: Duration) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                if meta.is_dir() {
                    walk(&p, d);
                } else if meta.is_file() {
                    std::fs::File::open(&p).unwrap().set_modified(meta.modified().unwrap() - d).unwrap();
                }
            }
        }
        walk(self.root.base(), d);
    }

    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }

    fn sysctl(&self, file: &str) -> Output {
        let text = self.root.read_string_opt(file).unwrap().unwrap();
        for (key, value) in text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once(" = ")) {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            if key.starts_with("net.bridge.") && !self.root.exists("/sys/module/br_netfilter") {
                return Output {
                    code: Some(255),
                    stderr: format!("sysctl: cannot stat {path}: No such file"),
                    ..Output::default()
                };
            }
            self.root.write(&path, format!("{value}\n").as_bytes(), 0o644).unwrap();
        }
        Output { code: Some(0), ..Output::default() }
    }
}

/// The `Environment=` assignments of containerd's drop-ins, as systemd
/// expands them (`%%` is `%`).
fn drop_in_env(root: &Root) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.path(DROP_IN_DIR)) else { return Vec::new() };
    let mut names: Vec<_> =
        dir.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "conf")).collect();
    names.sort();
    let text: String = names.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    text.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|v| v.trim_matches('"').replace("%%", "%"))
        .collect()
}

#[async_trait]
impl Runner for Booted {
    async fn run(&self, cmd: &Cmd) -> anyhow::Result<Output> {
        self.calls.lock().unwrap().push(cmd.to_string());
        let ok = |stdout: String| Ok(Output { code: Some(0), stdout, stderr: String::new() });
        let argv: Vec<&str> = cmd.argv.iter().map(String::as_str).collect();
        match argv[..] {
            ["systemctl", "show", UNIT, _] => {
                let d = self.daemon.lock().unwrap();
                if !d.installed {
                    return ok("LoadState=not-found\nActiveState=inactive\nExecMainStartTimestampMonotonic=0\n".into());
                }
                ok(format!("LoadState=loaded\nActiveState=active\nExecMainStartTimestampMonotonic={}\n", d.started_us))
            }
            ["systemctl", "daemon-reload"] => {
                // A real reload takes a good part of a second.
                std::thread::sleep(Duration::from_millis(20));
                self.reload();
                ok(String::new())
            }
            ["systemctl", "restart", UNIT] => {
                self.start(Duration::from_millis(300));
                self.daemon.lock().unwrap().restarts += 1;
                ok(String::new())
            }
            ["modprobe", module] => {
                self.root.write(format!("/sys/module/{module}/refcnt"), b"0\n", 0o444).unwrap();
                ok(String::new())
            }
            ["sysctl", "-p", file] => Ok(self.sysctl(file)),
            ["swapoff", "-a"] => {
                self.root.write("/proc/swaps", PROC_SWAPS_HEADER.as_bytes(), 0o444).unwrap();
                ok(String::new())
            }
            _ => Ok(Output { code: Some(127), stderr: format!("{cmd}: not on this node"), ..Output::default() }),
        }
    }
}

/// The stage as a booted node runs it.
fn run_live(w: &World, node: &Booted, c: &Config) -> anyhow::Result<Outcome> {
    let cx = Context::new(&w.root, &w.node, c, node, false);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(prepare(&cx, c.kubernetes.as_ref().unwrap(), true))
}

const SHOW: &str = "systemctl show containerd.service --property=LoadState,ActiveState,ExecMainStartTimestampMonotonic";

#[test]
fn a_proxy_drop_in_newer_than_containerd_restarts_it_and_an_unchanged_one_does_not() {
    let w = image();
    let node = Booted::new(&w);
    let c = cfg(&format!("{PROXY}{KUBE}{V131}"));
    w.stage(&ProxyStage, &c).unwrap();

    let out = run_live(&w, &node, &c).unwrap();
    assert_eq!(
        node.take_calls(),
        [
            SHOW,
            "modprobe overlay",
            "modprobe br_netfilter",
            "sysctl -p /etc/sysctl.d/99-node-init-kubernetes.conf",
            "swapoff -a",
            "systemctl daemon-reload",
            "systemctl restart containerd.service",
        ]
    );
    assert_eq!(
        summary(&out),
        "modules, sysctls, swap off (1 line in /etc/fstab), containerd config updated and restarted"
    );
    assert_eq!(detail(&out, "containerd_restart_reason"), "its config changed");
    {
        let d = node.daemon.lock().unwrap();
        assert!(d.env.iter().any(|e| e.contains("HTTPS_PROXY=http://proxyuser:old-secret@")), "{:?}", d.env);
        assert!(d.config.as_deref().is_some_and(|t| t.contains("SystemdCgroup = true")));
    }
    assert!(std::os::unix::net::UnixStream::connect(w.root.path(SOCKET)).is_ok(), "containerd serves again");

    // The proxy unchanged: its drop-in is older than containerd now.
    w.stage(&ProxyStage, &c).unwrap();
    let after = snapshot(&w);
    let again = run_live(&w, &node, &c).unwrap();
    assert_eq!(node.take_calls(), [SHOW], "only a read");
    assert_eq!(snapshot(&w), after);
    assert_eq!(summary(&again), "modules, sysctls, swap off, containerd config unchanged");
    assert_eq!(node.daemon.lock().unwrap().restarts, 1);
}

#[test]
fn a_rotated_proxy_password_reaches_the_running_containerd() {
    let w = image();
    let node = Booted::new(&w);
    let with = |pw: &str| cfg(&format!("{}{KUBE}{V131}", PROXY.replace("old-secret", pw)));
    w.stage(&ProxyStage, &with("old-secret")).unwrap();
    run_live(&w, &node, &with("old-secret")).unwrap();
    // Minutes later the operator rotates the password; the proxy stage
    // rewrites the drop-in while containerd keeps running.
    node.age(Duration::from_secs(120));
    w.stage(&ProxyStage, &with("new-secret")).unwrap();
    assert!(w.read(DROP_INS[0]).contains("new-secret"));
    node.take_calls();
    let out = run_live(&w, &node, &with("new-secret")).unwrap();
    assert_eq!(node.take_calls(), [SHOW, "systemctl daemon-reload", "systemctl restart containerd.service"]);
    let why = detail(&out, "containerd_restart_reason");
    assert_eq!(why, format!("{} changed after it started", DROP_INS[0]), "the drop-in alone, not the config");
    let d = node.daemon.lock().unwrap();
    assert!(d.env.iter().any(|e| e.contains("new-secret")) && !d.env.iter().any(|e| e.contains("old-secret")));
}

#[test]
fn a_node_without_containerd_fails_naming_what_the_image_must_carry() {
    let w = image();
    let node = Booted::new(&w);
    node.daemon.lock().unwrap().installed = false;
    let before = snapshot(&w);
    let err = format!("{:#}", run_live(&w, &node, &cfg(&format!("{KUBE}{V131}"))).unwrap_err());
    assert!(err.contains("containerd is not installed (containerd.service: LoadState=not-found)"), "{err}");
    assert_eq!(snapshot(&w), before, "nothing changed");
}
