//! Structured logs to stderr, which journald keeps. The level comes from
//! `NODE_INIT_LOG` (an `EnvFilter` directive such as `debug` or
//! `node_init=trace`), default `info`. Stdout is left to machine output.
//!
//! The same lines are also kept in memory ([`captured`]), the last
//! [`CAPTURE_LIMIT`] bytes of them, so a failure reported to MAAS can carry
//! this run's log without asking journald.

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The most of this run's log kept in memory: the newest lines win.
pub const CAPTURE_LIMIT: usize = 256 * 1024;

static CAPTURED: Mutex<Captured> = Mutex::new(Captured { text: Vec::new(), dropped: 0 });

struct Captured {
    text: Vec<u8>,
    /// Bytes dropped from the front to stay within the limit.
    dropped: usize,
}

pub fn init() {
    let filter = EnvFilter::try_from_env("NODE_INIT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let memory = tracing_subscriber::fmt::layer().with_writer(|| Capture).with_ansi(false).with_target(false);
    // A second init (in tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry().with(filter).with(stderr).with(memory).try_init();
}

/// This run's log as far as it is kept, oldest line first.
pub fn captured() -> String {
    let c = CAPTURED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = String::from_utf8_lossy(&c.text);
    // Start at a whole line once the front was cut.
    match (c.dropped, text.find('\n')) {
        (0, _) => text.into_owned(),
        (n, Some(i)) => format!("[{} earlier bytes of this run's log left out]\n{}", n + i + 1, &text[i + 1..]),
        (n, None) => format!("[{n} earlier bytes of this run's log left out]\n{text}"),
    }
}

/// The in-memory writer: appends, and drops the oldest quarter when full
/// (so the cut happens seldom, not at every line).
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut c = CAPTURED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.text.extend_from_slice(buf);
        if c.text.len() > CAPTURE_LIMIT {
            let cut = c.text.len() - CAPTURE_LIMIT * 3 / 4;
            c.text.drain(..cut);
            c.dropped += cut;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capture_keeps_the_newest_lines_within_its_limit() {
        init();
        tracing::info!(marker = "first-line", "capture test");
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..(CAPTURE_LIMIT / 1024 + 10) {
            std::io::Write::write_all(&mut Capture, line.as_bytes()).unwrap();
        }
        tracing::warn!(marker = "last-line", "capture test");
        let text = captured();
        assert!(text.len() <= CAPTURE_LIMIT + 100, "{}", text.len());
        assert!(!text.contains("first-line") && text.contains("last-line"), "{}", &text[text.len() - 200..]);
        assert!(
            text.starts_with('[') && text.contains("earlier bytes of this run's log left out]\nx"),
            "{}",
            &text[..100]
        );
    }
}
