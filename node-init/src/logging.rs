//! Structured logs to stderr, which journald keeps. The level comes from
//! `NODE_INIT_LOG` (an `EnvFilter` directive such as `debug` or
//! `node_init=trace`), default `info`. Stdout is left to machine output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("NODE_INIT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (in tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
