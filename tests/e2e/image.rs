//! `node-image build` against bases made by GNU tar from trees the test
//! writes: every entry type kept as it was, identity reset, the same bytes
//! twice, and bad inputs leaving nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use node_init_tests::text;

fn node_image(args: &[&str]) -> Output {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/node-image");
    Command::new(bin).args(args).env_clear().env("PATH", "/usr/bin:/bin").output().expect("node-image")
}

fn overlays() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays").display().to_string()
}

/// A minimal static x86-64 ELF: the header and one PT_LOAD, no interpreter.
fn static_elf(path: &Path) {
    let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
    b.extend([0u8; 8]);
    b.extend(2u16.to_le_bytes()); // ET_EXEC
    b.extend(62u16.to_le_bytes()); // x86-64
    b.extend(1u32.to_le_bytes());
    b.extend(0x400078u64.to_le_bytes()); // entry
    b.extend(64u64.to_le_bytes()); // phoff
    b.extend(0u64.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    for v in [64u16, 56, 1, 0, 0, 0] {
        b.extend(v.to_le_bytes());
    }
    b.extend(1u32.to_le_bytes()); // PT_LOAD
    b.extend(5u32.to_le_bytes());
    for v in [0u64, 0x400000, 0x400000, 122, 122, 0x1000] {
        b.extend(v.to_le_bytes());
    }
    b.extend([0xeb, 0xfe]);
    std::fs::write(path, b).unwrap();
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
}

struct World {
    dir: tempfile::TempDir,
}

impl World {
    /// A tree with every entry type and the identity files, tarred by GNU
    /// tar with xattrs and numeric owners.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tree");
        for d in
            ["etc/ssh", "etc/systemd/system", "usr/local/sbin", "var/lib/cloud/instances/i-1", "var/lib/systemd", "dev"]
        {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        std::fs::write(t.join("etc/hostname"), "image\n").unwrap();
        std::fs::write(t.join("etc/machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::write(t.join("etc/ssh/ssh_host_ed25519_key"), "secret\n").unwrap();
        std::fs::write(t.join("etc/ssh/sshd_config"), "Port 22\n").unwrap();
        std::fs::write(t.join("var/lib/cloud/instances/i-1/user-data.txt"), "old\n").unwrap();
        std::os::unix::fs::symlink("/var/lib/cloud/instances/i-1", t.join("var/lib/cloud/instance")).unwrap();
        std::fs::write(t.join("var/lib/systemd/random-seed"), "seed").unwrap();
        std::fs::write(t.join("usr/local/sbin/node-init"), "old binary").unwrap();
        std::fs::write(t.join("usr/local/sbin/su"), "setuid").unwrap();
        std::fs::set_permissions(t.join("usr/local/sbin/su"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::hard_link(t.join("etc/hostname"), t.join("etc/hostname.hard")).unwrap();
        std::os::unix::fs::symlink("hostname", t.join("etc/hostname.link")).unwrap();
        sh(&["mkfifo", &t.join("dev/fifo").display().to_string()]);
        sh(&["mknod", &t.join("dev/null0").display().to_string(), "c", "1", "3"]);
        sh(&["chown", "1234:5678", &t.join("etc/ssh/sshd_config").display().to_string()]);
        sh(&["touch", "-h", "-d", "@1700000000", &t.join("etc/hostname").display().to_string()]);
        xattr::set(t.join("usr/local/sbin/su"), "user.node-image-test", b"kept").unwrap();
        let base = dir.path().join("base.tar");
        sh(&[
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-cpf",
            &base.display().to_string(),
            "-C",
            &t.display().to_string(),
            ".",
        ]);
        static_elf(&dir.path().join("node-init"));
        Self { dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn build(&self, base: &str, binary: &str, out: &str, epoch: &str) -> Output {
        let mut args = self.build_args(base, binary, out);
        args.extend(["--source-date-epoch".to_owned(), epoch.to_owned()]);
        node_image(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn build_args(&self, base: &str, binary: &str, out: &str) -> Vec<String> {
        [
            "build",
            "--base",
            &self.p(base).display().to_string(),
            "--binary",
            &self.p(binary).display().to_string(),
            "--overlays",
            &overlays(),
            "--out",
            &self.p(out).display().to_string(),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    }

    /// `tar --list --verbose --numeric-owner`, one line per path.
    fn listing(&self, archive: &str) -> std::collections::BTreeMap<String, String> {
        let out = Command::new("tar")
            .args(["--list", "--verbose", "--numeric-owner", "--full-time", "-f"])
            .arg(self.p(archive))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| {
                let path =
                    l.split_whitespace().nth(5).unwrap().trim_start_matches("./").trim_end_matches('/').to_owned();
                // Whole seconds: the image drops sub-second mtimes,
                let time = l.split_whitespace().nth(4).unwrap();
                // and writes paths without a leading "./".
                let line = l.split_whitespace().collect::<Vec<_>>().join(" ");
                let line = line.replacen(time, time.split('.').next().unwrap(), 1).replace(" ./", " ");
                (path, line)
            })
            .collect()
    }
}

#[test]
fn every_entry_type_is_kept_identity_is_reset_and_builds_are_identical() {
    let w = World::new();
    let epoch = "1800000000";
    for out in ["a.tgz", "b.tgz"] {
        let o = w.build("base.tar", "node-init", out, epoch);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    assert_eq!(std::fs::read(w.p("a.tgz")).unwrap(), std::fs::read(w.p("b.tgz")).unwrap(), "not reproducible");
    let sum = std::fs::read_to_string(w.p("a.tgz.sha256")).unwrap();
    assert!(sum.ends_with("  a.tgz\n") && sum.len() == 64 + 2 + 5 + 1, "{sum}");

    let before = w.listing("base.tar");
    let after = w.listing("a.tgz");
    let removed = [
        "etc/ssh/ssh_host_ed25519_key",
        "var/lib/cloud/instance",
        "var/lib/cloud/instances",
        "var/lib/cloud/instances/i-1",
        "var/lib/cloud/instances/i-1/user-data.txt",
        "var/lib/systemd/random-seed",
    ];
    let replaced = ["etc/machine-id", "usr/local/sbin/node-init"];
    for (path, line) in &before {
        if removed.contains(&path.as_str()) {
            assert!(!after.contains_key(path), "{path} was kept");
        } else if !replaced.contains(&path.as_str()) {
            // Everything else is listed exactly as GNU tar listed the base
            // (type, mode incl. setuid, numeric owner, size, mtime, link).
            assert_eq!(after.get(path), Some(line), "{path} changed");
        }
    }
    assert!(after["etc/machine-id"].starts_with("-r--r--r-- 0/0 0 "), "{}", after["etc/machine-id"]);
    assert!(
        after["usr/local/sbin/node-init"].starts_with("-rwxr-xr-x 0/0 122 "),
        "{}",
        after["usr/local/sbin/node-init"]
    );
    assert!(after["etc/node-init"].starts_with("drwx------ 0/0"), "{}", after["etc/node-init"]);
    assert!(after["etc/hostname"].contains("link to etc/hostname.hard"), "{}", after["etc/hostname"]);
    assert!(after.contains_key("etc/systemd/system/node-init.service"));
    assert!(after["etc/systemd/system/multi-user.target.wants/node-init.service"].contains("-> ../node-init.service"));

    // The xattr survives, read back by the tar crate.
    let f = std::fs::File::open(w.p("a.tgz")).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut found = false;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("usr/local/sbin/su") {
            let exts: Vec<(String, Vec<u8>)> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|x| x.unwrap())
                .map(|x| (x.key().unwrap().to_owned(), x.value_bytes().to_vec()))
                .collect();
            assert!(exts.contains(&("SCHILY.xattr.user.node-image-test".into(), b"kept".to_vec())), "{exts:?}");
            found = true;
        }
    }
    assert!(found);

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.p("a.tgz.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["replaced"], serde_json::json!(["etc/machine-id", "usr/local/sbin/node-init"]));
    assert_eq!(manifest["removed"].as_array().unwrap().len(), removed.len());
    assert_eq!(manifest["image"]["sha256"].as_str().unwrap(), &sum[..64]);
}

#[test]
fn mtimes_are_clamped_to_source_date_epoch() {
    let w = World::new();
    let o = w.build("base.tar", "node-init", "c.tgz", "1700000000");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let after = w.listing("c.tgz");
    for (path, line) in after {
        let date = line.split_whitespace().nth(3).unwrap();
        assert!(date <= "2023-11-14", "{path}: {line}");
    }
}

#[test]
fn bad_inputs_fail_clearly_and_leave_no_output() {
    let w = World::new();
    std::fs::write(w.p("junk.tar"), vec![b'x'; 4096]).unwrap();
    let tgz = std::fs::read(w.p("base.tar")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tgz).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(w.p("truncated.tar.gz"), &gz[..gz.len() / 2]).unwrap();
    std::fs::copy("/bin/sh", w.p("dynamic")).unwrap();
    for (base, binary, expect) in [
        ("junk.tar", "node-init", "is not a readable tar archive"),
        ("truncated.tar.gz", "node-init", "is not a readable tar archive"),
        ("base.tar", "dynamic", "is dynamically linked"),
        ("base.tar", "base.tar", "is not an ELF executable"),
    ] {
        let o = w.build(base, binary, "out.tgz", "1800000000");
        assert_eq!(o.status.code(), Some(1), "{base} {binary}");
        assert!(text(&o.stderr).contains(expect), "{base} {binary}: {}", text(&o.stderr));
        let left: Vec<_> = std::fs::read_dir(w.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("out.tgz"))
            .collect();
        assert!(left.is_empty(), "{base} {binary} left {left:?}");
    }
}

#[test]
fn without_source_date_epoch_the_base_newest_mtime_is_used() {
    let w = World::new();
    let args = w.build_args("base.tar", "node-init", "d.tgz");
    let o = node_image(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut newest = 0;
    for e in tar::Archive::new(std::fs::File::open(w.p("base.tar")).unwrap()).entries().unwrap() {
        newest = newest.max(e.unwrap().header().mtime().unwrap());
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.p("d.tgz.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["source_date_epoch"], newest);
    let f = std::fs::File::open(w.p("d.tgz")).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let binary = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().ends_with("usr/local/sbin/node-init") && e.header().size().unwrap() == 122)
        .expect("the new binary");
    assert_eq!(binary.header().mtime().unwrap(), newest);
}
