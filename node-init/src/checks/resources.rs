//! CPU, memory and free disk under `/var/lib` against `resources:`
//! minimums (default 4 CPU and 8 GiB, the MAAS gateway's sizing, and 20
//! GiB free, what the cluster writes there: see `config::default_disk`).

use anyhow::{Context as _, Result};
use async_trait::async_trait;

use super::kernel::read;
use super::{Check, Finding, Inputs, fail, pass};

pub struct Cpus;
pub struct Memory;
pub struct Disk;

#[async_trait]
impl Check for Cpus {
    fn name(&self) -> &'static str {
        "cpus"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let want = i.config.resources.cpus;
        let have = read(i, "/proc/cpuinfo")?.lines().filter(|l| l.starts_with("processor")).count() as u32;
        anyhow::ensure!(have > 0, "/proc/cpuinfo lists no processor");
        Ok(if have >= want {
            pass(format!("{have} CPUs (minimum {want})"))
        } else {
            fail(format!("{have} CPUs, minimum {want}"))
        })
    }
}

#[async_trait]
impl Check for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let want = i.config.resources.memory_mib;
        let kib = read(i, "/proc/meminfo")?
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("/proc/meminfo has no MemTotal")?;
        // MemTotal excludes memory the kernel reserved at boot; allow 5%.
        let have = kib / 1024;
        Ok(if have * 100 >= want * 95 {
            pass(format!("{have} MiB (minimum {want} MiB)"))
        } else {
            fail(format!("{have} MiB of memory, minimum {want} MiB"))
        })
    }
}

#[async_trait]
impl Check for Disk {
    fn name(&self) -> &'static str {
        "disk"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let want = i.config.resources.disk_gib;
        // The space left where containerd, kubelet and etcd write, on
        // whatever filesystem holds /var/lib (its own volume, or /'s).
        let at = ["/var/lib", "/var", "/"].into_iter().find(|p| i.root.exists(p)).unwrap_or("/");
        let path = i.root.path(at);
        let st = nix::sys::statvfs::statvfs(&path).with_context(|| format!("statvfs {}", path.display()))?;
        let gib = |blocks: u64| blocks * st.fragment_size() / (1 << 30);
        let (free, size) = (gib(st.blocks_available()), gib(st.blocks()));
        Ok(if free >= want {
            pass(format!("{free} GiB free of {size} GiB on {at} (minimum {want} GiB free)"))
        } else {
            fail(format!("{free} GiB free of {size} GiB on {at}, minimum {want} GiB free"))
        })
    }
}
