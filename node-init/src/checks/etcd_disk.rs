//! `etcd_disk`: is the disk under `/var/lib/etcd` fast enough for etcd?
//! etcd fdatasyncs its WAL on every commit; its own guidance (and what
//! OpenShift's assisted installer measures with fio: `--rw=write
//! --ioengine=sync --fdatasync=1 --size=22m --bs=2300`) is a 99th
//! percentile under 10 ms. Here: two writers at once, 2300-byte writes each
//! followed by fdatasync, 22 MiB in all, in a new temp file on the
//! filesystem that will hold `/var/lib/etcd` (its nearest existing
//! ancestor). Never the raw device, never a byte of existing data; the
//! file is removed by the same blocking task that wrote it, so a verify
//! cut off by its deadline still removes it.
//!
//! A slow disk would take minutes for 22 MiB, so the writers also stop at
//! a budget of half the check's question time (4.5 s under verify's
//! default 10 s); the reason then says how many writes were measured.
//! Only init and control-plane nodes run etcd; a worker skips.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use async_trait::async_trait;

use super::{Check, Finding, Inputs, fail, pass, skip};
use crate::config::Role;

const DATA_DIR: &str = "/var/lib/etcd";
/// etcd's typical WAL entry, fio's `--bs=2300`.
const BLOCK: usize = 2300;
/// fio's `--size=22m`, shared by the writers.
const TOTAL: u64 = 22 * 1024 * 1024;
const WRITERS: u64 = 2;
/// Each writer's share, in whole blocks.
const PER_WRITER: u64 = TOTAL / WRITERS / BLOCK as u64;

pub struct EtcdDisk;

#[async_trait]
impl Check for EtcdDisk {
    fn name(&self) -> &'static str {
        "etcd_disk"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let Some(k) = &i.config.kubernetes else { return Ok(skip("no kubernetes section: no etcd here")) };
        if k.role() == Role::Worker {
            return Ok(skip("a worker runs no etcd"));
        }
        let (dir, shown) = nearest_existing(i, DATA_DIR);
        let budget = i.query_timeout / 2;
        let m = tokio::task::spawn_blocking(move || measure(&dir, budget))
            .await
            .map_err(|e| anyhow!("the writers stopped: {e}"))??;
        Ok(judge(&m, &shown, i.config.resources.etcd_fsync_p99.0, budget))
    }
}

/// fdatasync latencies, each writer's in turn.
struct Measured {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

fn judge(m: &Measured, dir: &str, max: Duration, budget: Duration) -> Finding {
    let mut sorted = m.latencies.clone();
    sorted.sort();
    let (p50, p99) = (percentile(&sorted, 50.0), percentile(&sorted, 99.0));
    let n = sorted.len();
    let whole = u64::try_from(n).unwrap_or(u64::MAX) >= PER_WRITER * WRITERS;
    let cut = if whole { String::new() } else { format!(", cut at the {} budget", humantime::format_duration(budget)) };
    let (took, shown) = (m.elapsed.as_secs_f64(), humantime::format_duration(max));
    let text = format!(
        "fdatasync p99 {} (max {shown}), p50 {} over {n} writes of {BLOCK} bytes by {WRITERS} writers in {took:.2}s{cut} \
         on {dir}",
        ms(p99),
        ms(p50),
    );
    if p99 <= max { pass(text) } else { fail(text) }
}

fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

/// The nearest-rank percentile of sorted samples (none: zero).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `abs` or its nearest ancestor that exists, as a host path and as shown.
fn nearest_existing(i: &Inputs<'_>, abs: &str) -> (PathBuf, String) {
    let mut at = Path::new(abs);
    while !i.root.exists(at) {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    (i.root.path(at), at.display().to_string())
}

/// Writes and syncs in a new file in `dir` until 22 MiB or `budget`,
/// then removes it.
fn measure(dir: &Path, budget: Duration) -> Result<Measured> {
    let path = dir.join(format!(".node-init-etcd-disk-{}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let measured = write_all(&file, budget).with_context(|| format!("writing {}", path.display()));
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    measured
}

fn write_all(file: &File, budget: Duration) -> Result<Measured> {
    let region = PER_WRITER * BLOCK as u64;
    // fio preallocates (fallocate=native), as etcd does its WAL segments;
    // a filesystem without fallocate just grows the file.
    let _ = nix::fcntl::posix_fallocate(file, 0, i64::try_from(region * WRITERS)?);
    let started = Instant::now();
    let end = started + budget;
    let each: Vec<Result<Vec<Duration>>> = std::thread::scope(|s| {
        let writers: Vec<_> =
            (0..WRITERS).map(|w| s.spawn(move || writer(file, w * region, PER_WRITER, end))).collect();
        writers.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a writer panicked")))).collect()
    });
    let mut latencies = Vec::new();
    for e in each {
        latencies.extend(e?);
    }
    anyhow::ensure!(!latencies.is_empty(), "no write finished within {}", humantime::format_duration(budget));
    Ok(Measured { latencies, elapsed: started.elapsed() })
}

/// One writer: `count` blocks from `offset`, each followed by fdatasync,
/// whose latency is kept.
fn writer(file: &File, offset: u64, count: u64, end: Instant) -> Result<Vec<Duration>> {
    let block = [0x5au8; BLOCK];
    let mut out = Vec::with_capacity(usize::try_from(count)?);
    for n in 0..count {
        if Instant::now() >= end {
            break;
        }
        file.write_all_at(&block, offset + n * BLOCK as u64)?;
        let t = Instant::now();
        file.sync_data()?;
        out.push(t.elapsed());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = ms_list(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&s[..10], 99.0), Duration::from_millis(10), "few samples: p99 is the worst");
        assert_eq!(percentile(&ms_list(&[7]), 50.0), Duration::from_millis(7));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }

    #[test]
    fn the_p99_decides_and_a_cut_run_says_so() {
        let mut lat = ms_list(&[1; 99]);
        lat.push(Duration::from_millis(30));
        let m = Measured { latencies: lat, elapsed: Duration::from_millis(150) };
        let budget = Duration::from_secs(4);
        let f = judge(&m, "/var/lib", Duration::from_millis(10), budget);
        assert_eq!(f.status, Status::Pass, "{}", f.reason);
        assert_eq!(
            f.reason,
            "fdatasync p99 1.000ms (max 10ms), p50 1.000ms over 100 writes of 2300 bytes by 2 writers in 0.15s, \
             cut at the 4s budget on /var/lib"
        );
        let m = Measured { latencies: ms_list(&[12; 10_028]), elapsed: Duration::from_secs(60) };
        let f = judge(&m, "/var/lib/etcd", Duration::from_millis(10), budget);
        assert_eq!(f.status, Status::Fail);
        assert!(f.reason.starts_with("fdatasync p99 12.000ms (max 10ms)") && !f.reason.contains("cut"), "{}", f.reason);
    }

    #[test]
    fn a_measurement_writes_beside_existing_data_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("member"), b"etcd's own").unwrap();
        let m = measure(dir.path(), Duration::from_millis(300)).unwrap();
        // On a fast disk all of it; on a slow one what the budget allows.
        assert!(!m.latencies.is_empty() && m.latencies.len() <= 10_028, "{}", m.latencies.len());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["member"], "only the existing file remains");
        assert_eq!(std::fs::read(dir.path().join("member")).unwrap(), b"etcd's own");
    }

    #[test]
    fn a_directory_it_cannot_write_is_an_error() {
        let err = measure(Path::new("/proc"), Duration::from_secs(1)).err().unwrap();
        assert!(format!("{err:#}").starts_with("creating /proc/.node-init-etcd-disk-"), "{err:#}");
    }
}
