//! Structured logs to stderr, which journald keeps. The level comes from
//! `NODE_INIT_LOG` (an `EnvFilter` directive such as `debug` or
//! `node_init=trace`), default `info`. A bare level is node-init's own: the
//! libraries under it (HTTP/2 frames, connection pools) log warnings only,
//! so `debug` shows node-init's steps, not the gRPC plumbing's; a directive
//! that names targets is taken as written. Stdout is left to machine output.
//!
//! When stderr is the journal (`JOURNAL_STREAM` names stderr's device and
//! inode, as systemd sets it for a unit's stream), each line starts with its
//! syslog priority, `<3>` for an error down to `<7>` for debug, the prefix
//! sd-daemon(3) describes and journald's `SyslogLevelPrefix=` reads, so
//! `journalctl -u node-init -p err` shows the errors.
//!
//! The same lines are also kept in memory ([`captured`]), the last
//! [`CAPTURE_LIMIT`] bytes of them, so a failure reported to MAAS can carry
//! this run's log without asking journald.

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The most of this run's log kept in memory: the newest lines win.
pub const CAPTURE_LIMIT: usize = 256 * 1024;

static CAPTURED: Mutex<Captured> = Mutex::new(Captured { text: Vec::new(), dropped: 0 });

struct Captured {
    text: Vec<u8>,
    /// Bytes dropped from the front to stay within the limit.
    dropped: usize,
}

/// `NODE_INIT_LOG` as an `EnvFilter` directive: empty is `info`; a bare
/// level is node-init's own, with the libraries at `warn`.
fn directive(wanted: &str) -> String {
    let wanted = wanted.trim();
    let level = if wanted.is_empty() { "info" } else { wanted };
    if ["trace", "debug", "info", "warn", "error", "off"].contains(&level.to_ascii_lowercase().as_str()) {
        format!("warn,node_init={level}")
    } else {
        level.to_owned()
    }
}

pub fn init() {
    let wanted = std::env::var("NODE_INIT_LOG").unwrap_or_default();
    let filter = EnvFilter::try_new(directive(&wanted)).unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::stderr().is_terminal())
        .with_target(false);
    let stderr = stderr.event_format(Priority { prefix: journal, inner: tracing_subscriber::fmt::format() });
    let memory = tracing_subscriber::fmt::layer().with_writer(|| Capture).with_ansi(false).with_target(false);
    // A second init (in tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry().with(filter).with(stderr).with(memory).try_init();
}

/// What goes before a line node-init prints itself on stderr at `level`
/// (the final error): the priority in the journal, else nothing.
pub fn prefix(level: &Level) -> String {
    if stderr_is_journal() { format!("<{}>", priority(level)) } else { String::new() }
}

/// Is stderr the journal's stream? systemd sets `JOURNAL_STREAM` to
/// `DEVICE:INODE` of the stream it connected; a child whose stderr was
/// redirected elsewhere inherits the variable but not the stream.
fn stderr_is_journal() -> bool {
    let Ok(want) = std::env::var("JOURNAL_STREAM") else { return false };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else { return false };
    want == format!("{}:{}", st.st_dev, st.st_ino)
}

/// sd-daemon(3)'s priority for a level: err, warning, info, debug.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A format that puts `<N>` before each event when `prefix` is set.
struct Priority<F> {
    prefix: bool,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        if self.prefix {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
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
    #[test]
    fn a_bare_level_is_node_inits_own_and_a_directive_is_taken_as_written() {
        use super::directive;
        assert_eq!(directive(""), "warn,node_init=info");
        assert_eq!(directive("debug"), "warn,node_init=debug");
        assert_eq!(directive(" TRACE "), "warn,node_init=TRACE");
        assert_eq!(directive("h2=trace,node_init=debug"), "h2=trace,node_init=debug");
    }

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn in_the_journal_each_line_carries_its_syslog_priority() {
        for (prefix, want) in [(true, ["<3>", "<4>", "<6>"]), (false, ["", "", ""])] {
            let buf = Buf::default();
            let b = buf.clone();
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(move || b.clone())
                .with_ansi(false)
                .event_format(Priority { prefix, inner: tracing_subscriber::fmt::format().without_time() });
            let sub = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(sub, || {
                tracing::error!("e");
                tracing::warn!("w");
                tracing::info!("i");
            });
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3, "{text}");
            for (line, p) in lines.iter().zip(want) {
                assert_eq!(line.starts_with('<'), prefix, "{line}");
                assert!(line.starts_with(p), "{line} should start with {p:?}");
            }
        }
    }

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
