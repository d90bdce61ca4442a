use super::*;
use crate::config::{self, Config};
use crate::pipeline::End;
use crate::state::{State, Status};
use crate::testing::{DEBIAN, RHEL as ROCKY, World};
const UPGRADED: &str = "Reading package lists...\n2 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\n";
const INTERRUPTED: &str =
    "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem.\n";

/// Runs the pipeline with only the patch stage, on paused time so the
/// backoff waits cost nothing.
fn run(w: &World, yaml: &str) -> End {
    w.run(&[&PatchStage], &config::parse(yaml, "test").unwrap(), true)
}

fn inputs(c: &Config) -> String {
    let mut f = Fingerprint::new(b"test key");
    PatchStage.inputs(c, &mut f);
    f.finish()
}

#[test]
fn nothing_happens_unless_os_patch() {
    let w = World::with_os(DEBIAN);
    assert_eq!(run(&w, "os: {reboot: always}\n"), End::Done);
    assert!(w.runner.calls().is_empty());
    assert_eq!(w.record("patch").status, Status::Skipped);
}

#[test]
fn apt_refreshes_then_upgrades_non_interactively_keeping_old_config() {
    let w = World::with_os(DEBIAN);
    w.runner.answer(0, "", "");
    w.runner.answer(0, UPGRADED, "");
    assert_eq!(run(&w, "os: {patch: true, lock_timeout: 2m}\n"), End::Done);
    assert_eq!(
        w.runner.argvs(),
        [
            "apt-get -q -o DPkg::Lock::Timeout=120 update",
            "apt-get -q -y -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef \
             -o Dpkg::Options::=--force-confold dist-upgrade",
        ]
    );
    for call in w.runner.calls() {
        assert!(call.env.contains(&("DEBIAN_FRONTEND".into(), "noninteractive".into())), "{call:?}");
    }
    let rec = w.record("patch");
    assert_eq!(rec.status, Status::Done);
    assert_eq!(rec.details["packages_upgraded"], 3);
    assert_eq!(rec.details["reboot_required"], false);
    assert_eq!(rec.summary.as_deref(), Some("3 packages upgraded; no reboot"));
}

#[test]
fn a_failing_mirror_is_retried_then_the_upgrade_goes_on() {
    let w = World::with_os(DEBIAN);
    w.runner.answer(100, "", "E: Failed to fetch http://mirror/dists/bookworm/InRelease  503");
    w.runner.answer(100, "", "E: Failed to fetch http://mirror/dists/bookworm/InRelease  503");
    w.runner.answer(0, "", "");
    w.runner.answer(0, UPGRADED, "");
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Done);
    let argvs = w.runner.argvs();
    assert_eq!(argvs.iter().filter(|a| a.ends_with(" update")).count(), 3, "{argvs:?}");
    assert!(argvs[3].ends_with("dist-upgrade"));
}

#[test]
fn a_source_apt_could_not_fetch_is_a_failed_refresh_even_with_exit_0() {
    let w = World::with_os(DEBIAN);
    let unfetched = "W: Failed to fetch https://repo.example/./InRelease  Could not connect to 10.0.0.1:3128\n\
                     W: Some index files failed to download. They have been ignored, or old ones used instead.\n";
    for _ in 0..REFRESH.attempts {
        w.runner.answer(0, "", unfetched);
    }
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Failed);
    assert_eq!(w.runner.calls().len(), REFRESH.attempts as usize, "an upgrade followed lists apt could not fetch");
    let rec = w.record("patch");
    let error = rec.last_error.clone().unwrap_or_default();
    assert!(error.contains("not every source could be fetched: W: Failed to fetch https://repo.example"), "{error}");
}

#[test]
fn a_mirror_that_stays_down_fails_after_a_bounded_number_of_tries() {
    let w = World::with_os(DEBIAN);
    for _ in 0..10 {
        w.runner.answer(100, "", "E: Failed to fetch http://mirror/dists/bookworm/InRelease  503");
    }
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Failed);
    assert_eq!(w.runner.calls().len(), REFRESH.attempts as usize, "no upgrade may follow a failed refresh");
    let err = w.record("patch").last_error.unwrap();
    assert!(err.contains("refreshing the package lists: gave up after 5 attempts"), "{err}");
    assert!(err.contains("503"), "the mirror's error is missing: {err}");
}

#[test]
fn an_interrupted_dpkg_is_repaired_once() {
    let w = World::with_os(DEBIAN);
    w.runner.answer(0, "", "");
    w.runner.answer(100, "", INTERRUPTED);
    w.runner.answer(0, "", "");
    w.runner.answer(0, UPGRADED, "");
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Done);
    let argvs = w.runner.argvs();
    assert_eq!(argvs[2], "dpkg --force-confdef --force-confold --configure -a");
    assert!(argvs[3].ends_with("dist-upgrade"));
    assert_eq!(argvs.len(), 4);
}

#[test]
fn a_dpkg_that_stays_broken_is_reported_not_repaired_again() {
    let w = World::with_os(DEBIAN);
    w.runner.answer(0, "", "");
    w.runner.answer(100, "", INTERRUPTED);
    w.runner.answer(0, "", "");
    w.runner.answer(100, "", INTERRUPTED);
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Failed);
    assert_eq!(w.runner.calls().len(), 4);
    let err = w.record("patch").last_error.unwrap();
    assert!(err.contains("upgrading packages") && err.contains("dpkg was interrupted"), "{err}");
}

#[test]
fn a_journal_a_killed_dpkg_left_is_repaired_before_the_upgrade_as_the_upgrade_runs() {
    let w = World::with_os(DEBIAN);
    w.write("/var/lib/dpkg/updates/0003", "Package: node-init-testpkg\nStatus: install ok half-configured\n");
    w.write("/var/lib/dpkg/updates/tmp.i", "");
    w.runner.answer(0, "", "");
    w.runner.answer(0, "", "");
    w.runner.answer(0, UPGRADED, "");
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Done);
    let calls = w.runner.calls();
    assert_eq!(calls[0].to_string(), "dpkg --force-confdef --force-confold --configure -a");
    assert!(calls[1].to_string().ends_with(" update") && calls[2].to_string().ends_with("dist-upgrade"));
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].env, calls[2].env, "the repair runs in the upgrade's environment");
    assert!(calls[0].env.contains(&("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned())));
}

#[test]
fn a_package_killed_mid_unpack_that_dpkg_cannot_configure_is_left_to_the_upgrade_to_reinstall() {
    let w = World::with_os(DEBIAN);
    w.write("/var/lib/dpkg/updates/0000", "");
    w.runner.answer(
        1,
        "",
        "dpkg: error processing package node-init-testpkg (--configure):\n package is in a very bad inconsistent \
         state; you should\n reinstall it before attempting configuration\n",
    );
    w.runner.answer(0, "", "");
    w.runner.answer(
        0,
        "1 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n1 not fully installed or removed.\n",
        "",
    );
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Done);
    let argvs = w.runner.argvs();
    assert!(argvs[0].starts_with("dpkg ") && argvs[2].ends_with("dist-upgrade"), "{argvs:?}");
}

#[test]
fn a_repaired_dpkg_that_apt_still_finds_interrupted_is_not_repaired_again() {
    let w = World::with_os(DEBIAN);
    w.write("/var/lib/dpkg/updates/0000", "");
    w.runner.answer(0, "", "");
    w.runner.answer(0, "", "");
    w.runner.answer(100, "", INTERRUPTED);
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Failed);
    assert_eq!(w.runner.calls().len(), 3);
}

#[test]
fn dpkgs_own_temp_file_is_not_a_journal_entry() {
    let w = World::with_os(DEBIAN);
    w.write("/var/lib/dpkg/updates/tmp.i", "");
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Done);
    assert!(w.runner.argvs()[0].ends_with(" update"), "{:?}", w.runner.argvs());
}

#[test]
fn if_required_reboots_only_when_a_package_asks() {
    let w = World::with_os(DEBIAN);
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Done);
    assert_eq!(w.record("patch").status, Status::Done);

    let w = World::with_os(DEBIAN);
    w.root.write(REBOOT_REQUIRED, b"*** System restart required ***\n", 0o644).unwrap();
    w.root.write(REBOOT_REQUIRED_PKGS, b"linux-image-6.1.0-28-amd64\n", 0o644).unwrap();
    assert_eq!(run(&w, "os: {patch: true}\n"), End::RebootRequired);
    let rec = w.record("patch");
    assert_eq!(rec.status, Status::RebootPending);
    assert_eq!(rec.reason.as_deref(), Some("/var/run/reboot-required exists (for linux-image-6.1.0-28-amd64)"));
    let st = State::load(&w.root).unwrap();
    assert_eq!(st.reboots.len(), 1);
    assert_eq!(st.reboots[0].boot_id, "boot-1");
}

#[test]
fn never_does_not_reboot_but_says_one_is_required() {
    let w = World::with_os(DEBIAN);
    w.root.write(REBOOT_REQUIRED, b"", 0o644).unwrap();
    assert_eq!(run(&w, "os: {patch: true, reboot: never}\n"), End::Done);
    let rec = w.record("patch");
    assert_eq!(rec.status, Status::Done);
    assert_eq!(rec.details["reboot_required"], true);
    assert!(State::load(&w.root).unwrap().reboots.is_empty());
}

#[test]
fn always_reboots_once_and_the_next_boot_goes_on_without_patching_again() {
    let w = World::with_os(DEBIAN);
    assert_eq!(run(&w, "os: {patch: true, reboot: always}\n"), End::RebootRequired);
    assert_eq!(w.runner.calls().len(), 2);
    // Same boot (the reboot did not happen): ask again, patch nothing.
    assert_eq!(run(&w, "os: {patch: true, reboot: always}\n"), End::RebootRequired);
    assert_eq!(w.runner.calls().len(), 2);
    w.boot("boot-2");
    assert_eq!(run(&w, "os: {patch: true, reboot: always}\n"), End::Done);
    assert_eq!(w.runner.calls().len(), 2, "patched again after the reboot");
    let rec = w.record("patch");
    assert_eq!(rec.status, Status::Done);
    assert_eq!(rec.rebooted_from_boot.as_deref(), Some("boot-1"));
    w.boot("boot-3");
    assert_eq!(run(&w, "os: {patch: true, reboot: always}\n"), End::Done);
    assert_eq!(State::load(&w.root).unwrap().reboots.len(), 1);
}

#[test]
fn the_loop_guard_stops_a_fourth_reboot() {
    let w = World::with_os(DEBIAN);
    w.root.write(REBOOT_REQUIRED, b"", 0o644).unwrap();
    // An operator flipping os.reboot makes the stage run again each boot.
    let configs = ["os: {patch: true, reboot: always}\n", "os: {patch: true}\n"];
    for i in 0..3 {
        assert_eq!(run(&w, configs[i % 2]), End::RebootRequired, "reboot {i}");
        w.boot(&format!("boot-{}", i + 2));
        assert_eq!(run(&w, configs[i % 2]), End::Done);
    }
    assert_eq!(run(&w, configs[1]), End::Failed);
    let rec = w.record("patch");
    assert_eq!(rec.status, Status::Failed);
    assert!(rec.last_error.unwrap().contains("refusing to reboot again"));
    assert_eq!(State::load(&w.root).unwrap().reboots.len(), 3);
}

#[test]
fn dnf_upgrades_with_refresh_and_asks_needs_restarting() {
    let w = World::with_os(ROCKY);
    w.runner.answer(0, "Transaction Summary\n====\nInstall  1 Package\nUpgrade  4 Packages\n\nComplete!\n", "");
    w.runner.answer(1, "Reboot is required to fully utilize these updates.\n", "");
    assert_eq!(run(&w, "os: {patch: true}\n"), End::RebootRequired);
    assert_eq!(w.runner.argvs(), ["dnf -y upgrade --refresh", "needs-restarting -r"]);
    let rec = w.record("patch");
    assert_eq!(rec.details["packages_upgraded"], 5);
    assert_eq!(rec.reason.as_deref(), Some("`needs-restarting -r` says so"));
}

#[test]
fn dnf_without_needs_restarting_fails_with_advice() {
    let w = World::with_os(ROCKY);
    w.runner.answer(0, "Nothing to do.\n", "");
    w.runner.answer(127, "", "chroot: failed to run command 'needs-restarting': No such file or directory");
    assert_eq!(run(&w, "os: {patch: true}\n"), End::Failed);
    assert!(w.record("patch").last_error.unwrap().contains("install dnf-utils"));
}

#[test]
fn a_dead_dnf_pid_file_is_not_a_lock_but_a_live_one_is() {
    let w = World::with_os(ROCKY);
    let probe = Probe::PidFile("/var/lib/dnf/rpmdb_lock.pid");
    w.root.write("/var/lib/dnf/rpmdb_lock.pid", b"999999999\n", 0o644).unwrap();
    assert_eq!(holder(&w.root, probe).unwrap(), None);
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    w.root.write("/var/lib/dnf/rpmdb_lock.pid", format!("{}\n", child.id()).as_bytes(), 0o644).unwrap();
    let h = holder(&w.root, probe).unwrap().expect("a live holder");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(h.pid, child.id() as i32);
    assert_eq!(h.cmdline, "sleep 30");
}

#[test]
fn counts_come_from_the_tools_summaries() {
    assert_eq!(apt_count("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n"), 0);
    assert_eq!(apt_count("12 upgraded, 3 newly installed, 1 to remove and 2 not upgraded.\n"), 15);
    assert_eq!(dnf_count("Nothing to do.\nComplete!\n"), 0);
    assert_eq!(
        dnf_count("Transaction Summary:\n Installing:         2 packages\n Upgrading:          7 packages\n"),
        9
    );
}

#[test]
fn inputs_follow_patch_and_reboot_only() {
    let a = Config::default();
    let mut b = Config::default();
    b.os.lock_timeout = config::values::Dur(Duration::from_secs(5));
    assert_eq!(inputs(&a), inputs(&b));
    b.os.reboot = RebootPolicy::Always;
    assert_ne!(inputs(&a), inputs(&b));
}
