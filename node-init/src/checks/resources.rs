//! CPU, memory and disk against `resources:` minimums (default 4 CPU,
//! 8 GiB, 60 GiB: the MAAS gateway's sizing).

use async_trait::async_trait;

use super::{Check, Facts, Finding, fail, pass};

pub struct Cpus;
pub struct Memory;
pub struct Disk;

#[async_trait]
impl Check for Cpus {
    fn name(&self) -> &'static str {
        "cpus"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        let want = f.config.resources.cpus;
        let have = match f.root.read_string_opt("/proc/cpuinfo") {
            Ok(Some(t)) => t.lines().filter(|l| l.starts_with("processor")).count() as u32,
            _ => return fail("cannot read /proc/cpuinfo"),
        };
        if have >= want {
            pass(format!("{have} CPUs (minimum {want})"))
        } else {
            fail(format!("{have} CPUs, minimum {want}"))
        }
    }
}

#[async_trait]
impl Check for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        let want = f.config.resources.memory_mib;
        let kib = f.root.read_string_opt("/proc/meminfo").ok().flatten().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        });
        let Some(kib) = kib else { return fail("cannot read MemTotal from /proc/meminfo") };
        // MemTotal excludes memory the kernel reserved at boot; allow 5%.
        let have = kib / 1024;
        if have * 100 >= want * 95 {
            pass(format!("{have} MiB (minimum {want} MiB)"))
        } else {
            fail(format!("{have} MiB of memory, minimum {want} MiB"))
        }
    }
}

#[async_trait]
impl Check for Disk {
    fn name(&self) -> &'static str {
        "disk"
    }
    async fn run(&self, f: &Facts<'_>) -> Finding {
        let want = f.config.resources.disk_gib;
        let st = match nix::sys::statvfs::statvfs(f.root.base()) {
            Ok(s) => s,
            Err(e) => return fail(format!("statvfs {}: {e}", f.root.base().display())),
        };
        let have = st.blocks() * st.fragment_size() / (1 << 30);
        if have >= want {
            pass(format!("{have} GiB on / (minimum {want} GiB)"))
        } else {
            fail(format!("{have} GiB on /, minimum {want} GiB"))
        }
    }
}
