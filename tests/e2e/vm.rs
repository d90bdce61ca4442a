//! The bootable-image tier: the image `node-image build` makes from the
//! bootable bookworm root (`scripts/rootfs vm`: systemd, the cloud kernel,
//! cloud-init), the static release binary and `overlays/`, checked with
//! the image's own systemd.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use node_init_tests::text;

use crate::rootfs::cached_rootfs;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fully static node-init the image carries (`just static`;
/// `scripts/test-all` builds it).
pub fn static_binary() -> PathBuf {
    let p = workspace().join("target/x86_64-unknown-linux-gnu/release/node-init");
    assert!(p.exists(), "{} is missing: run `just static` (scripts/test-all does)", p.display());
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
        let built = Command::new(workspace().join("target/debug/node-image"))
            .arg("build")
            .arg("--base")
            .arg(cached_rootfs("vm"))
            .arg("--binary")
            .arg(static_binary())
            .arg("--overlays")
            .arg(workspace().join("overlays"))
            .arg("--out")
            .arg(&out)
            .output()
            .expect("node-image");
        assert!(built.status.success(), "node-image build: {}", text(&built.stderr));
        out
    })
}

/// The image unpacked into a fresh directory.
pub fn unpacked() -> tempfile::TempDir {
    let image = image();
    let dir = tempfile::tempdir_in(workspace().join("target/vm")).unwrap();
    let out = Command::new("tar")
        .args(["-xzpf"])
        .arg(image)
        .args(["--numeric-owner", "--xattrs", "-C"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", text(&out.stderr));
    dir
}

fn chroot(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("chroot")
}

#[test]
fn the_unit_verifies_and_is_enabled_in_the_built_image() {
    let root = unpacked();
    let r = root.path();

    // systemd-analyze of the image's own systemd: exit 0 and not a single
    // warning (an unknown key or a bad value only warns).
    let out = chroot(r, &["systemd-analyze", "verify", "/etc/systemd/system/node-init.service"]);
    assert!(out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(), "{}", text(&out.stderr));
    let out = chroot(r, &["systemctl", "is-enabled", "node-init.service"]);
    assert_eq!(text(&out.stdout).trim(), "enabled", "{}", text(&out.stderr));
    // The ordering the first boot depends on.
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/node-init.service")).unwrap();
    for want in [
        "Type=oneshot",
        "After=network-online.target cloud-config.service",
        "Before=kubelet.service",
        "ConditionPathExists=!/var/lib/node-init/done",
        "ExecStart=/usr/local/sbin/node-init run",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == want), "{want} missing from\n{unit}");
    }

    // The binary is the static build, runs in the image, and the identity
    // the base carried is gone.
    let bin = r.join("usr/local/sbin/node-init");
    assert!(std::fs::read(&bin).unwrap() == std::fs::read(static_binary()).unwrap());
    assert_eq!(std::fs::metadata(&bin).unwrap().permissions().mode() & 0o7777, 0o755);
    let out = chroot(r, &["/usr/local/sbin/node-init", "--version"]);
    assert!(out.status.success() && text(&out.stdout).starts_with("node-init "), "{}", text(&out.stderr));
    assert_eq!(std::fs::metadata(r.join("etc/node-init")).unwrap().permissions().mode() & 0o7777, 0o700);
    assert_eq!(std::fs::read(r.join("etc/machine-id")).unwrap(), b"");
    assert!(
        r.join("boot").read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("vmlinuz-"))
    );
}
