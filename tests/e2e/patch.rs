//! The patch stage for real: apt in the mmdebstrap root upgrades a package
//! from a local repository whose new version asks for a reboot; the
//! package lock held by another process is waited for, boundedly.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use node_init_tests::apt::{PKG, installed, prepare_upgrade};
use node_init_tests::rootfs::extracted;
use node_init_tests::*;

/// apt's frontend lock, which this test holds as another apt would.
const LOCK: &str = "var/lib/dpkg/lock-frontend";

/// Holds an fcntl write lock on `path`, as apt does, until dropped.
fn hold(path: &Path) -> File {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap();
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&f, FcntlArg::F_SETLK(&lock)).unwrap();
    f
}

#[test]
fn patch_waits_for_the_lock_upgrades_for_real_and_reboots_once() {
    let root = extracted();
    let r = root.path();
    prepare_upgrade(r);
    set_boot_id(r, "aaaaaaaa-0000-0000-0000-000000000001");
    let cfg = r.join("tmp/config.yaml");
    std::fs::write(&cfg, "os:\n  patch: true\n").unwrap();
    let args = ["run", "--root", r.to_str().unwrap(), "--config", cfg.to_str().unwrap(), "--only", "patch"];

    // Another process (this test) holds apt's lock for a few seconds.
    let held = hold(&r.join(LOCK));
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        drop(held);
    });
    let started = Instant::now();
    let out = node_init(&args);
    let took = started.elapsed();
    release.join().unwrap();
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(took >= Duration::from_secs(3), "did not wait for the lock: {took:?}");
    assert!(
        log.contains("waiting for the package lock") && log.contains(&format!("pid={}", std::process::id())),
        "{log}"
    );

    assert_eq!(installed(r), "2");
    let st = state(r);
    assert_eq!(st["stages"]["patch"]["status"], "reboot-pending", "{st:#}");
    assert_eq!(st["stages"]["patch"]["details"]["packages_upgraded"], 1);
    assert_eq!(st["reboots"][0]["boot_id"], "aaaaaaaa-0000-0000-0000-000000000001");
    assert!(st["reboots"][0]["reason"].as_str().unwrap().contains(PKG), "{st:#}");

    // The next boot: the stage is done, nothing is upgraded again, no reboot.
    let history = std::fs::read_to_string(r.join("var/log/apt/history.log")).unwrap();
    set_boot_id(r, "aaaaaaaa-0000-0000-0000-000000000002");
    let again = node_init(&args);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(std::fs::read_to_string(r.join("var/log/apt/history.log")).unwrap(), history, "apt ran again");
    let st = state(r);
    assert_eq!(st["stages"]["patch"]["status"], "done");
    assert_eq!(st["reboots"].as_array().unwrap().len(), 1);

    let status = node_init(&["status", "--root", r.to_str().unwrap()]);
    let table = text(&status.stdout);
    assert!(
        table.contains("1 package upgraded")
            && table.contains("rebooted out of boot aaaaaaaa-0000-0000-0000-000000000001"),
        "{table}"
    );
}

#[test]
fn a_lock_held_past_the_bound_fails_naming_the_holder() {
    let root = FakeRoot::new();
    root.write("etc/node-init/config.yaml", "os: {patch: true, lock_timeout: 1s}\n");
    // Snapshot first: reading the lock file would close a descriptor of it,
    // which drops this process's fcntl lock.
    root.write(LOCK, "");
    let before = root.snapshot();
    let _held = hold(&root.path().join(LOCK));
    let started = Instant::now();
    let out = node_init(&["run", "--root", &root.arg(), "--only", "patch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    let st = state(root.path());
    let err = st["stages"]["patch"]["last_error"].as_str().unwrap();
    let me = std::fs::read(format!("/proc/{}/cmdline", std::process::id())).unwrap();
    let me = text(me.split(|b| *b == 0).next().unwrap());
    assert!(err.contains(&format!("/var/lib/dpkg/lock-frontend is held by pid {} ({me}", std::process::id())), "{err}");
    assert!(err.contains("os.lock_timeout"), "{err}");
    // Nothing but node-init's own state changed.
    let after = root.snapshot();
    let changed: Vec<_> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    assert!(changed.iter().all(|k| k.starts_with("var/lib/node-init")), "{changed:?}");
}

#[test]
fn a_source_apt_cannot_reach_fails_the_refresh_though_apt_exits_0() {
    let root = extracted();
    let r = root.path();
    prepare_upgrade(r);
    // A second source on a loopback port nothing listens on: apt-get update
    // warns "Failed to fetch" and exits 0.
    let mut sources = std::fs::read_to_string(r.join("etc/apt/sources.list")).unwrap();
    sources.push_str("deb [trusted=yes] http://127.0.0.1:9/ ./\n");
    std::fs::write(r.join("etc/apt/sources.list"), sources).unwrap();
    set_boot_id(r, "aaaaaaaa-0000-0000-0000-000000000003");
    let cfg = r.join("tmp/config.yaml");
    std::fs::write(&cfg, "os:\n  patch: true\n").unwrap();
    let out = node_init(&["run", "--root", r.to_str().unwrap(), "--config", cfg.to_str().unwrap(), "--only", "patch"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // The refresh failed, so no upgrade followed on half the lists.
    assert_eq!(installed(r), "1");
    let st = state(r);
    assert_eq!(st["stages"]["patch"]["status"], "failed", "{st:#}");
    let err = st["stages"]["patch"]["last_error"].as_str().unwrap();
    assert!(
        err.contains("not every source could be fetched")
            && err.contains("http://127.0.0.1:9/")
            && err.contains("gave up after 5 attempts"),
        "{err}"
    );
}
