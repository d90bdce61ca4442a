use std::time::Duration;

use super::progress::{self, PROGRESS_DIR, PROGRESS_PATH, Progress, process_start};
use super::*;

fn ahead() -> Ahead {
    Ahead::new(&["dns", "images"], BTreeMap::new(), b"key", "boot-1")
}

fn done(line: &str) -> anyhow::Result<Done> {
    Ok(Done::new(Details::new()).summary(line))
}

#[tokio::test(start_paused = true)]
async fn a_success_is_taken_at_the_turn_and_kept_with_its_key() {
    let a = ahead();
    a.start();
    a.run("dns", Some("k1".into()), async { done("resolved") }).await;
    assert_eq!(a.take("dns").and_then(|d| d.summary).as_deref(), Some("resolved"));
    let kept = a.to_keep();
    assert_eq!(kept["dns"].key, "k1");
    assert_eq!(kept["dns"].boot_id, "boot-1");
    // A later run (after a reboot) finds it under the same key only.
    let later = Ahead::new(&["dns"], kept, b"key", "boot-2");
    assert!(later.kept("dns", "k2").is_none());
    let d = later.kept("dns", "k1").expect("kept");
    assert_eq!(d.details["dns_done_ahead"], "boot-1");
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_never_taken_and_work_not_started_never_runs() {
    let a = ahead();
    // Not started: the work never runs, and the turn gets nothing.
    let never = a.run("dns", None, async { panic!("ran before the pipeline let it") });
    let ((), taken) = tokio::join!(never, async { a.take("dns") });
    assert!(taken.is_none());
    let a = ahead();
    a.start();
    a.run("images", None, async { Err(anyhow::anyhow!("registry down")) }).await;
    assert!(a.wait("images").await.is_none());
    assert!(a.to_keep().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_turn_stops_work_under_way_or_waits_for_it() {
    let a = ahead();
    a.start();
    let slow = a.run("dns", Some("k".into()), async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        done("late")
    });
    let turn = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        a.take("dns")
    };
    let ((), taken) = tokio::join!(slow, turn);
    assert!(taken.is_none(), "took work that was still under way");
    assert!(a.to_keep().is_empty(), "kept work that was stopped");
    // Waiting lets it finish.
    let pulls = a.run("images", None, async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        done("pulled")
    });
    let ((), waited) = tokio::join!(pulls, a.wait("images"));
    assert_eq!(waited.and_then(|d| d.summary).as_deref(), Some("pulled"));
}

/// What `status` reads while the run lives: each slot's state as it
/// changes, in the pipeline's order, the progress of running work, and
/// nothing once the run (the value) is gone.
#[tokio::test(start_paused = true)]
async fn the_work_is_shown_as_it_goes_and_the_file_goes_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::root::Root::new(dir.path()).unwrap();
    let path = root.path(PROGRESS_PATH);
    // The boot id `status` compares with the file's.
    let boot = crate::state::boot_id(&root).unwrap();
    let a =
        Ahead::new(&["dns", "discovery", "images"], BTreeMap::new(), b"key", &boot).showing_progress_in(root.clone());
    let shown = || {
        let p = Progress::live(&root).expect("a live run's progress");
        p.work.into_iter().map(|w| (w.name, w.state, w.progress)).collect::<Vec<_>>()
    };
    let row = |n: &str, s: &str, p: &str| (n.to_owned(), s.to_owned(), p.to_owned());
    assert!(!path.exists(), "shown before the work starts");
    a.start();
    // One write for the start: no piece of work is shown `waiting`.
    assert_eq!(shown(), [row("dns", "running", ""), row("discovery", "running", ""), row("images", "running", "")]);
    a.progress("images", "2/8 in containerd; pulling etcd:3.5.15-0");
    a.run("dns", None, async { Err(anyhow::anyhow!("NXDOMAIN for node1.maas")) }).await;
    assert_eq!(
        shown(),
        [
            row("dns", "failed: NXDOMAIN for node1.maas", ""),
            row("discovery", "running", ""),
            row("images", "running", "2/8 in containerd; pulling etcd:3.5.15-0"),
        ]
    );
    // A failed slot's progress is not shown (its stage redoes the work).
    a.progress("dns", "asking again");
    assert!(a.take("discovery").is_none());
    a.run("images", None, async { done("pulled") }).await;
    assert_eq!(
        shown(),
        [
            row("dns", "failed: NXDOMAIN for node1.maas", ""),
            row("discovery", "stopped at its stage's turn", ""),
            row("images", "done", ""),
        ]
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    drop(a);
    assert!(!path.parent().unwrap().exists(), "the progress outlived the run");
}

/// A run killed with `kill -9` leaves its file; a process that is not
/// the writer (another pid, or the same pid started at another time)
/// does not make it live.
#[test]
fn a_file_a_killed_run_left_is_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::root::Root::new(dir.path()).unwrap();
    let boot = crate::state::boot_id(&root).unwrap();
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    let started = process_start(pid).expect("the child's start time");
    let write = |p: &Progress| root.write(PROGRESS_PATH, serde_json::to_string(p).unwrap().as_bytes(), 0o644).unwrap();
    let p = Progress { pid, started, boot_id: boot.clone(), work: Vec::new() };
    write(&p);
    assert_eq!(Progress::live(&root), Some(p.clone()));
    write(&Progress { started: started + 1, ..p.clone() });
    assert_eq!(Progress::live(&root), None, "a reused pid taken for the run");
    write(&Progress { boot_id: "another-boot".into(), ..p.clone() });
    assert_eq!(Progress::live(&root), None, "a file from another boot");
    write(&p);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(Progress::live(&root), None, "a dead run's file");
}

/// A stage's `ahead` may return without running its work before the
/// pipeline starts any (the DNS wait under `--root`, with no addresses):
/// the slot is given up, shown `not needed`, and never shown `running`.
#[tokio::test(start_paused = true)]
async fn work_given_up_before_the_start_is_not_needed_and_never_running() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::root::Root::new(dir.path()).unwrap();
    let boot = crate::state::boot_id(&root).unwrap();
    let a = Ahead::new(&["dns", "images"], BTreeMap::new(), b"key", &boot).showing_progress_in(root.clone());
    a.abandon(&["dns"]);
    a.start();
    let p = Progress::live(&root).expect("a live run's progress");
    let states: Vec<_> = p.work.iter().map(|w| (w.name.as_str(), w.state.as_str())).collect();
    assert_eq!(states, [("dns", "not needed"), ("images", "running")]);
    assert!(a.take("dns").is_none());
    assert!(a.wait("dns").await.is_none(), "a turn waited for work that will never run");
}

/// The run holding the lock clears what a killed run left (its file and a
/// temp file cut off mid-write), and only that.
#[test]
fn clearing_takes_the_runs_files_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::root::Root::new(dir.path()).unwrap();
    root.write(PROGRESS_PATH, b"{}", 0o644).unwrap();
    root.write("/run/node-init/.ahead.json.node-init-tmp", b"{\"pid\":", 0o644).unwrap();
    progress::clear(&root);
    assert!(!root.path(PROGRESS_DIR).exists());
    root.write(PROGRESS_PATH, b"{}", 0o644).unwrap();
    root.write("/run/node-init/other", b"kept", 0o644).unwrap();
    progress::clear(&root);
    assert!(!root.path(PROGRESS_PATH).exists());
    assert_eq!(std::fs::read(root.path("/run/node-init/other")).unwrap(), b"kept");
}
