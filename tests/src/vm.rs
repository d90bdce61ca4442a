//! The VM tier's machine. The image is what `node-image build` makes from
//! the bootable bookworm root (`scripts/rootfs vm`), the static release
//! binary and `overlays/`, built once per test run; each guest gets it
//! unpacked, written to a disk with `mkfs.ext4 -d`, and booted under QEMU
//! (TCG with `-cpu max`: /dev/kvm hangs guests here) with the image's own
//! kernel and initrd, its only NIC a tap in the test's namespace. A boot
//! ends when the guest powers off, when the caller says so, or at a
//! deadline; what it leaves is the serial console and the disk.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::net::Netns;
use crate::rootfs::cached_rootfs;
use crate::{node_image, run, text, workspace};

/// The guest NIC's MAC, which its network-config matches on.
pub const MAC: &str = "52:54:00:12:34:56";
/// One boot scenario's bound, well inside the tier's 20 minutes.
const DEADLINE: Duration = Duration::from_secs(12 * 60);

/// The fully static node-init the image carries (`scripts/static`, which
/// `just static` and `scripts/test-all` run).
pub fn static_binary() -> PathBuf {
    let p = workspace().join("target/x86_64-unknown-linux-gnu/release/node-init");
    assert!(p.exists(), "{} is missing: run scripts/static (scripts/test-all does)", p.display());
    p
}

/// The image, built once per test run with the debug node-image (the
/// previous run's is replaced).
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = workspace().join("target/vm");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("node-init.tgz");
        let arg = |p: &Path| p.display().to_string();
        let built = node_image(
            &[
                "build",
                "--base",
                &arg(&cached_rootfs("vm")),
                "--binary",
                &arg(&static_binary()),
                "--overlays",
                &arg(&workspace().join("overlays")),
                "--out",
                &arg(&out),
            ],
            &[],
        );
        assert!(built.status.success(), "node-image build: {}", text(&built.stderr));
        out
    })
}

/// The image unpacked into a fresh directory beside it.
pub fn unpacked() -> tempfile::TempDir {
    let image = image();
    let dir = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    run(Command::new("tar").arg("-xzpf").arg(image).args(["--numeric-owner", "--xattrs", "-C"]).arg(dir.path()));
    dir
}

/// Writes `tree` to a 3 GB ext4 disk image at `disk`, as the guest's root.
pub fn make_disk(tree: &Path, disk: &Path) {
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "root", "-d"]).arg(tree).arg(disk).arg("3G"));
}

/// What the guest's disk and console said once it stopped.
pub struct Boot {
    pub disk: PathBuf,
    pub serial: String,
    /// From QEMU's start to the guest's "e2e-report: done" (to 2 s).
    pub to_done: Option<Duration>,
}

impl Boot {
    /// CPU seconds per unit, summed over the boots: systemd's own
    /// accounting, which it logs as "UNIT: Consumed 1min 2.345s CPU time."
    /// when a unit stops (at the reboot and the power-off too).
    pub fn cpu(&self) -> BTreeMap<String, f64> {
        let mut cpu = BTreeMap::new();
        for l in self.serial.lines() {
            let Some((head, rest)) = l.split_once(": Consumed ") else { continue };
            let Some(spent) = rest.strip_suffix(" CPU time.") else { continue };
            let Some(unit) = head.rsplit(' ').next() else { continue };
            let mut secs = 0.0;
            for part in spent.split_whitespace() {
                if let Some(m) = part.strip_suffix("min") {
                    secs += m.parse::<f64>().unwrap_or(0.0) * 60.0;
                } else if let Some(ms) = part.strip_suffix("ms") {
                    secs += ms.parse::<f64>().unwrap_or(0.0) / 1e3;
                } else if let Some(v) = part.strip_suffix('s') {
                    secs += v.parse::<f64>().unwrap_or(0.0);
                }
            }
            *cpu.entry(unit.to_owned()).or_default() += secs;
        }
        cpu
    }

    /// Lines the report unit tagged with `tag`.
    pub fn tagged(&self, tag: &str) -> Vec<String> {
        self.serial.lines().filter_map(|l| l.split(tag).nth(1)).map(|l| l.trim().to_owned()).collect()
    }

    /// A file from the guest's disk, read with debugfs.
    pub fn file(&self, path: &str) -> String {
        let out = Command::new("debugfs").args(["-R", &format!("cat {path}")]).arg(&self.disk).output().unwrap();
        text(&out.stdout)
    }

    /// The package's stanza in the guest's dpkg status ("" when absent).
    pub fn package(&self, name: &str) -> String {
        let status = self.file("/var/lib/dpkg/status");
        status.split("\n\n").find(|p| p.starts_with(&format!("Package: {name}\n"))).unwrap_or_default().to_owned()
    }

    /// How many times a kernel started.
    pub fn boots(&self) -> usize {
        self.serial.matches("Linux version ").count()
    }
}

/// Boots `disk` (made from `tree`, whose /boot holds the kernel and
/// initrd) on `ns`'s `tap0` until the guest powers off, or `stop` says so
/// from the console so far. The serial log and kernel copies go in `work`.
pub fn boot(ns: &Netns, work: &Path, name: &str, disk: PathBuf, tree: &Path, stop: impl Fn(&str) -> bool) -> Boot {
    let find = |prefix: &str| {
        let boot = tree.join("boot");
        let f = std::fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* in the image's /boot"));
        // The disk holds its own copy; the kernel is read from the tree.
        let copy = work.join(format!("{name}-{prefix}"));
        std::fs::copy(&f, &copy).unwrap();
        copy
    };
    let (kernel, initrd) = (find("vmlinuz-"), find("initrd.img-"));
    let serial = work.join(format!("{name}.serial"));
    let mut qemu = Command::new("ip")
        .args(["netns", "exec", &ns.name, "qemu-system-x86_64"])
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-monitor", "none"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.journald.forward_to_console=1"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC},romfile=")])
        .args(["-device", "virtio-rng-pci"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
    let started = Instant::now();
    let mut to_done = None;
    loop {
        let log = text(&std::fs::read(&serial).unwrap_or_default());
        if to_done.is_none() && log.contains("e2e-report: done") {
            to_done = Some(started.elapsed());
        }
        if let Some(status) = qemu.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(qemu.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(status.success(), "qemu: {status}: {err}\n{}", tail(&log));
            break;
        }
        if stop(&log) {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break;
        }
        if started.elapsed() > DEADLINE {
            let _ = qemu.kill();
            let _ = qemu.wait();
            panic!("{name}: the guest did not finish within {DEADLINE:?}:\n{}", tail(&log));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let serial = text(&std::fs::read(&serial).unwrap());
    eprintln!("{name}: {} boot(s), {:.0} s", serial.matches("Linux version ").count(), started.elapsed().as_secs_f64());
    let _ = std::io::stderr().flush();
    Boot { disk, serial, to_done }
}

/// The console's last 80 lines, for a failure message.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}
