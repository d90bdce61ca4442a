//! Bases for `node-image build` as GNU tar makes them: a tree holding every
//! entry type (files, a setuid binary with an xattr, a hard link, a
//! symlink, a FIFO, a device node, a foreign owner, a fixed mtime) and the
//! identity files an installed machine carries, tarred with xattrs and
//! numeric owners, next to a minimal static ELF to pass as `--binary`.
//! [`TarBase::with`] adds files of the test's own (what a run on the base
//! left behind, a baked config, the Kubernetes tools). `listing` reads an
//! archive back the way GNU tar lists it, so a test compares what came out
//! with what went in.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::{node_image, run, workspace};

/// A temp dir holding `base.tar` and `node-init` (a static ELF).
pub struct TarBase {
    pub dir: tempfile::TempDir,
}

impl TarBase {
    /// A tree with every entry type and the identity files, tarred by GNU
    /// tar with xattrs and numeric owners.
    pub fn new() -> Self {
        Self::with(&[])
    }

    /// The same tree with `extra` files (path relative to the root, text)
    /// besides.
    pub fn with(extra: &[(&str, &str)]) -> Self {
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
        run(Command::new("mkfifo").arg(t.join("dev/fifo")));
        run(Command::new("mknod").arg(t.join("dev/null0")).args(["c", "1", "3"]));
        run(Command::new("chown").arg("1234:5678").arg(t.join("etc/ssh/sshd_config")));
        run(Command::new("touch").args(["-h", "-d", "@1700000000"]).arg(t.join("etc/hostname")));
        xattr::set(t.join("usr/local/sbin/su"), "user.node-image-test", b"kept").unwrap();
        for (path, text) in extra {
            std::fs::create_dir_all(t.join(path).parent().unwrap()).unwrap();
            std::fs::write(t.join(path), text).unwrap();
        }
        run(Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-cpf"])
            .arg(dir.path().join("base.tar"))
            .arg("-C")
            .arg(&t)
            .arg("."));
        static_elf(&dir.path().join("node-init"));
        Self { dir }
    }

    /// A file in the temp dir.
    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `node-image build` of files in the temp dir, with the workspace's
    /// `overlays/` and `--source-date-epoch EPOCH`.
    pub fn build(&self, base: &str, binary: &str, out: &str, epoch: &str) -> Output {
        let mut args = self.build_args(base, binary, out);
        args.extend(["--source-date-epoch".to_owned(), epoch.to_owned()]);
        node_image(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    }

    /// The same build's argv without an epoch.
    pub fn build_args(&self, base: &str, binary: &str, out: &str) -> Vec<String> {
        [
            "build",
            "--base",
            &self.p(base).display().to_string(),
            "--binary",
            &self.p(binary).display().to_string(),
            "--overlays",
            &workspace().join("overlays").display().to_string(),
            "--out",
            &self.p(out).display().to_string(),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    }

    /// `tar --list --verbose --numeric-owner`, one line per path.
    pub fn listing(&self, archive: &str) -> BTreeMap<String, String> {
        run(Command::new("tar")
            .args(["--list", "--verbose", "--numeric-owner", "--full-time", "-f"])
            .arg(self.p(archive)))
        .lines()
        .map(|l| {
            let path = l.split_whitespace().nth(5).unwrap().trim_start_matches("./").trim_end_matches('/').to_owned();
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

impl Default for TarBase {
    fn default() -> Self {
        Self::new()
    }
}

/// A minimal static x86-64 ELF: the header and one PT_LOAD, no interpreter.
fn static_elf(path: &std::path::Path) {
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
