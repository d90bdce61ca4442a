//! The real binary's stderr as systemd's journal stream sees it: with
//! `JOURNAL_STREAM` naming stderr (as systemd sets it for a unit, see
//! sd-daemon(3) and systemd.exec(5)), every line starts with its syslog
//! priority so `journalctl -p err` filters; naming anything else, nothing
//! is added.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use node_init_tests::{FakeRoot, bin};

fn stderr_with(journal_stream: impl Fn(&std::fs::Metadata) -> String) -> String {
    let root = FakeRoot::new();
    let log = tempfile::NamedTempFile::new().unwrap();
    let meta = std::fs::metadata(log.path()).unwrap();
    let status = Command::new(bin())
        // An unknown stage: an error line, exit 2.
        .args(["run", "--root", &root.arg(), "--only", "nope"])
        .env_clear()
        .env("NODE_INIT_LOG", "info")
        .env("JOURNAL_STREAM", journal_stream(&meta))
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    std::fs::read_to_string(log.path()).unwrap()
}

#[test]
fn lines_carry_their_priority_only_when_stderr_is_the_journal() {
    let text = stderr_with(|m| format!("{}:{}", m.dev(), m.ino()));
    let info = text.lines().find(|l| l.contains("configuration loaded")).expect("an info line");
    assert!(info.starts_with("<6>"), "{text}");
    let error = text.lines().find(|l| l.contains("unknown stage")).expect("the error line");
    assert!(error.starts_with("<3>node-init: error: "), "{text}");
    let text = stderr_with(|m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(text.lines().all(|l| !l.starts_with('<')), "{text}");
    assert!(text.contains("configuration loaded"), "{text}");
}
