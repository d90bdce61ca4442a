//! Shared helpers for the end-to-end tests: the real binary, temp roots,
//! snapshots of a root's files, and freshly minted certificates.

pub mod dns;
pub mod kube;
pub mod maas;
pub mod net;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `node-init` binary under test: `NODE_INIT_BIN`, else the workspace's
/// debug build (`cargo build --workspace` builds it; `just test` does).
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NODE_INIT_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/node-init");
    assert!(p.exists(), "{} is missing: run `cargo build --workspace --locked` first", p.display());
    p
}

/// Runs `node-init ARGS` with a clean environment and returns its output.
pub fn node_init(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NODE_INIT_LOG", "info")
        .output()
        .expect("starting node-init")
}

/// Lower-case hex, as sha256sum and kubeadm's pins print digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fake node root: a Debian os-release, an /etc/environment, a boot id.
pub struct FakeRoot {
    pub dir: tempfile::TempDir,
}

impl FakeRoot {
    pub fn new() -> Self {
        let r = Self { dir: tempfile::tempdir().expect("temp dir") };
        r.write("etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n");
        r.write("etc/environment", "LANG=C.UTF-8\n");
        r.write("proc/sys/kernel/random/boot_id", "11111111-2222-3333-4444-555555555555\n");
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn arg(&self) -> String {
        self.path().display().to_string()
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(self.path())
    }
}

impl Default for FakeRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// Every regular file below `dir` (relative path -> bytes). Directories
/// are listed as empty entries so a created directory shows up too.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).expect("below base").to_owned();
            if p.is_dir() && !p.is_symlink() {
                out.insert(rel.join(""), Vec::new());
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A self-signed certificate, as PEM, with the given key algorithm.
pub fn self_signed(alg: &'static rcgen::SignatureAlgorithm, ca: bool) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["proxy.test".to_owned()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "node-init test CA");
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key)
}

/// Indents a multi-line value for a YAML block scalar under a key.
pub fn yaml_block(value: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    value.lines().map(|l| format!("{pad}{l}\n")).collect()
}
