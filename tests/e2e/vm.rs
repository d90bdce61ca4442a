//! The bootable-image tier: the image `node-image build` makes from the
//! bootable bookworm root (`scripts/rootfs vm`: systemd, the cloud kernel,
//! cloud-init), the static release binary and `overlays/`, checked with
//! the image's own systemd.

use node_init_tests::rootfs::chroot;
use node_init_tests::vm::{static_binary, unpacked};
use node_init_tests::{mode, output, text};

#[test]
fn the_unit_verifies_and_is_enabled_in_the_built_image() {
    let root = unpacked();
    let r = root.path();

    // systemd-analyze of the image's own systemd: exit 0 and not a single
    // warning (an unknown key or a bad value only warns).
    let out = output(&mut chroot(r, &["systemd-analyze", "verify", "/etc/systemd/system/node-init.service"]));
    assert!(out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(), "{}", text(&out.stderr));
    let out = output(&mut chroot(r, &["systemctl", "is-enabled", "node-init.service"]));
    assert_eq!(text(&out.stdout).trim(), "enabled", "{}", text(&out.stderr));
    // The ordering the first boot depends on.
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/node-init.service")).unwrap();
    for want in [
        "Type=oneshot",
        "After=network-online.target cloud-config.service",
        "ConditionPathExists=!/var/lib/node-init/done",
        "ExecStart=/usr/local/sbin/node-init run",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == want), "{want} missing from\n{unit}");
    }
    // kubeadm restarts kubelet (and node-init containerd) through systemd
    // and waits for it: no job of theirs may be ordered after this unit's
    // start job, which lasts until kubeadm is done.
    for l in unit.lines().filter(|l| l.starts_with("Before=")) {
        assert!(!l.contains("kubelet") && !l.contains("containerd"), "{l} would deadlock kubeadm's restart of kubelet");
    }

    // The binary is the static build, runs in the image, and the identity
    // the base carried is gone.
    let bin = r.join("usr/local/sbin/node-init");
    assert!(std::fs::read(&bin).unwrap() == std::fs::read(static_binary()).unwrap());
    assert_eq!(mode(&bin), 0o755);
    let out = output(&mut chroot(r, &["/usr/local/sbin/node-init", "--version"]));
    assert!(out.status.success() && text(&out.stdout).starts_with("node-init "), "{}", text(&out.stderr));
    assert_eq!(mode(&r.join("etc/node-init")), 0o700);
    assert_eq!(std::fs::read(r.join("etc/machine-id")).unwrap(), b"");
    assert!(
        r.join("boot").read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("vmlinuz-"))
    );
}
