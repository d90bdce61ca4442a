//! The patch stage for real: apt in the mmdebstrap root upgrades a package
//! from a local repository whose new version asks for a reboot; the
//! package lock held by another process is waited for, boundedly.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use node_init_tests::*;

use crate::rootfs::extracted;

pub(crate) const PKG: &str = "node-init-testpkg";
const LOCK: &str = "var/lib/dpkg/lock-frontend";

/// Builds `PKG_VERSION_all.deb` in `out`; version 2's postinst asks for a
/// reboot the way Debian's kernel packages do.
pub(crate) fn deb(out: &Path, version: &str) -> std::path::PathBuf {
    let dir = out.join(format!("pkg-{version}"));
    std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(dir.join("usr/share/doc").join(PKG)).unwrap();
    std::fs::write(dir.join("usr/share/doc").join(PKG).join("VERSION"), format!("{version}\n")).unwrap();
    std::fs::write(
        dir.join("DEBIAN/control"),
        format!(
            "Package: {PKG}\nVersion: {version}\nArchitecture: all\nMaintainer: node-init tests <t@example.invalid>\n\
             Description: a package the patch stage upgrades\n"
        ),
    )
    .unwrap();
    if version == "2" {
        let postinst = dir.join("DEBIAN/postinst");
        std::fs::write(
            &postinst,
            format!(
                "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  mkdir -p /var/run\n  \
                 echo '*** System restart required ***' > /var/run/reboot-required\n  \
                 echo {PKG} >> /var/run/reboot-required.pkgs\nfi\n"
            ),
        )
        .unwrap();
        let mut perms = std::fs::metadata(&postinst).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&postinst, perms).unwrap();
    }
    let deb = out.join(format!("{PKG}_{version}_all.deb"));
    run(Command::new("dpkg-deb").args(["--build", "--root-owner-group"]).arg(&dir).arg(&deb));
    deb
}

pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn chroot(root: &Path, args: &[&str]) -> String {
    run(Command::new("chroot").arg(root).args(args).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

/// A flat apt repository (`deb [trusted=yes] URL ./`) in `repo` holding
/// `deb`.
pub(crate) fn flat_repo(repo: &Path, deb: &Path) {
    std::fs::create_dir_all(repo).unwrap();
    std::fs::copy(deb, repo.join(deb.file_name().unwrap())).unwrap();
    let packages = run(Command::new("apt-ftparchive").arg("packages").arg(".").current_dir(repo));
    std::fs::write(repo.join("Packages"), packages).unwrap();
    let release = run(Command::new("apt-ftparchive").arg("release").arg(".").current_dir(repo));
    std::fs::write(repo.join("Release"), release).unwrap();
}

/// A flat repository at `/srv/repo` inside the root holding version 2, the
/// only source apt knows; version 1 installed.
fn prepare(root: &Path) {
    let build = tempfile::tempdir().unwrap();
    let v1 = deb(build.path(), "1");
    let v2 = deb(build.path(), "2");
    flat_repo(&root.join("srv/repo"), &v2);
    std::fs::write(root.join("etc/apt/sources.list"), "deb [trusted=yes] file:/srv/repo ./\n").unwrap();
    if let Ok(entries) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
        for e in entries.flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    std::fs::copy(&v1, root.join("tmp/v1.deb")).unwrap();
    chroot(root, &["dpkg", "-i", "/tmp/v1.deb"]);
    assert_eq!(installed(root), "1");
}

fn installed(root: &Path) -> String {
    chroot(root, &["dpkg-query", "-W", "-f=${Version}", PKG])
}

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

fn boot(root: &Path, id: &str) {
    let p = root.join("proc/sys/kernel/random/boot_id");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{id}\n")).unwrap();
}

fn state(root: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root.join("var/lib/node-init/state.json")).unwrap()).unwrap()
}

#[test]
fn patch_waits_for_the_lock_upgrades_for_real_and_reboots_once() {
    let root = extracted();
    let r = root.path();
    prepare(r);
    boot(r, "aaaaaaaa-0000-0000-0000-000000000001");
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
    assert_eq!(st["stages"]["patch"]["facts"]["packages_upgraded"], 1);
    assert_eq!(st["reboots"][0]["boot_id"], "aaaaaaaa-0000-0000-0000-000000000001");
    assert!(st["reboots"][0]["reason"].as_str().unwrap().contains(PKG), "{st:#}");

    // The next boot: the stage is done, nothing is upgraded again, no reboot.
    let history = std::fs::read_to_string(r.join("var/log/apt/history.log")).unwrap();
    boot(r, "aaaaaaaa-0000-0000-0000-000000000002");
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
    prepare(r);
    // A second source on a loopback port nothing listens on: apt-get update
    // warns "Failed to fetch" and exits 0.
    let mut sources = std::fs::read_to_string(r.join("etc/apt/sources.list")).unwrap();
    sources.push_str("deb [trusted=yes] http://127.0.0.1:9/ ./\n");
    std::fs::write(r.join("etc/apt/sources.list"), sources).unwrap();
    boot(r, "aaaaaaaa-0000-0000-0000-000000000003");
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
