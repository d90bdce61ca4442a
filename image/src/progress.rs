//! Progress on a terminal as a bar, otherwise as a plain line every 10%.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: Arc<AtomicU64>,
    what: &'static str,
}

impl Progress {
    pub fn new(total: u64, what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Self { bar, total, done: Arc::new(AtomicU64::new(0)), what }
    }

    pub fn inc(&self, n: u64) {
        let before = self.done.fetch_add(n, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.total > 0 => {
                let (a, b) = (before * 10 / self.total, (before + n) * 10 / self.total);
                if b > a {
                    eprintln!(
                        "node-image: {} {}% ({} of {} MiB)",
                        self.what,
                        b * 10,
                        (before + n) >> 20,
                        self.total >> 20
                    );
                }
            }
            None => {}
        }
    }

    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
