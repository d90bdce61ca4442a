//! Stand-ins and worlds for the end-to-end tests in `e2e/`, which hold
//! tests only. This file has what every tier uses: the real binaries, a
//! command that must succeed, temp roots and snapshots of their files, and
//! freshly minted certificates; each module below is one stand-in or one
//! world.

// Debian packaging: the test package, a flat repository, dpkg in a root.
pub mod apt;
// bind9 serving the `maas` zone, as MAAS runs it, for the VM tier.
pub mod bind9;
// MAAS's metadata service as a clock check sees it: its `Date`, on its own clock.
pub mod clock;
// A cluster's material as its operator makes it: secrets, user data.
pub mod cluster;
// The node the whole-pipeline crash test kills: slow dpkg, slow kubeadm.
pub mod crash;
// An in-process DNS server (hickory) with a scripted zone.
pub mod dns;
// The VM tier's world: stand-ins, the guest's network, its disk.
pub mod first_boot;
// `node-init run` killed as a power cut, at moments from its own log.
pub mod kill;
// The kube-apiserver stand-in serving signed cluster-info, and its CA.
pub mod kube;
// The recording kubeadm double, and a root that carries it.
pub mod kubeadm;
// The kubelet double: its unit, failSwapOn, healthz.
pub mod kubelet;
// The MAAS region API stand-in for `node-image upload`.
pub mod maas;
// Namespaces, CONNECT and intercepting proxies, TLS and file servers.
pub mod net;
// A template root under an overlay per run, and what a run changed.
pub mod overlay;
// The cluster's other nodes as namespaces with listeners, netem and MTUs.
pub mod peers;
// `node-init verify` in a namespace with its own DNS, and its report.
pub mod preflight;
// The distribution registry, its images, and a CRI client.
pub mod registry;
// The cached mmdebstrap roots and commands run inside them.
pub mod rootfs;
// Base roots tarred by GNU tar, for `node-image build`.
pub mod tarbase;
// The built image, and QEMU booting a disk made from it.
pub mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes `content` at `rel` under `root` with `mode`, making its
/// directories.
pub fn write_mode(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// `systemctl enable`'s symlink under `root`: `unit` (an absolute path on
/// the node) wanted by `target`.
pub fn enable(root: &Path, unit: &str, target: &str) {
    let dir = root.join(format!("etc/systemd/system/{target}.wants"));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(Path::new(unit).file_name().unwrap());
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(unit, link).unwrap();
}

/// The PATH every command the tests start gets, in a clean environment.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The workspace's root, where `target/`, `overlays/` and `scripts/` are.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `node-init` binary under test: `NODE_INIT_BIN`, else the workspace's
/// debug build (`cargo build --workspace` builds it; `just test` does).
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NODE_INIT_BIN") {
        return PathBuf::from(p);
    }
    debug_build("node-init")
}

fn debug_build(name: &str) -> PathBuf {
    let p = workspace().join("target/debug").join(name);
    assert!(p.exists(), "{} is missing: run `cargo build --workspace --locked` first", p.display());
    p
}

/// Runs `node-init ARGS` with a clean environment and returns its output.
pub fn node_init(args: &[&str]) -> Output {
    node_init_command(args).output().expect("starting node-init")
}

/// `node-init ARGS` with a clean environment, to start.
pub fn node_init_command(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).env_clear().env("PATH", PATH).env("NODE_INIT_LOG", "info");
    c
}

/// Runs the debug `node-image ARGS` with a clean environment plus `env`.
pub fn node_image(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(debug_build("node-image"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .expect("node-image")
}

/// Runs `cmd` to its end, whatever its exit; a command that cannot start
/// is named in the panic.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// The stdout of `cmd`, which must succeed; otherwise its argv and output.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
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
        set_boot_id(r.path(), "11111111-2222-3333-4444-555555555555");
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

/// Makes `id` the boot id node-init reads under `root`: a new value is a
/// reboot as far as node-init can tell.
pub fn set_boot_id(root: &Path, id: &str) {
    let p = root.join("proc/sys/kernel/random/boot_id");
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, format!("{id}\n")).expect("writing the boot id");
}

/// A file's permission bits (setuid and sticky included).
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

/// node-init's state file under `root`, parsed.
pub fn state(root: &Path) -> serde_json::Value {
    let p = root.join("var/lib/node-init/state.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).expect("state.json parses")
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
