//! The real-rootfs tier: a Debian bookworm minbase root made by mmdebstrap
//! (built once per machine by `scripts/rootfs`, cached under
//! `target/rootfs/`), extracted per
//! test, and node-init run into it with `--root`, so the image's own
//! `update-ca-certificates` and `curl` do the work.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node_init_tests::*;

/// A cached root tarball (`scripts/rootfs KIND`: built by mmdebstrap on
/// first use, under a lock so parallel tests build it once).
pub fn cached_rootfs(kind: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rootfs");
    let out = Command::new(script).arg(kind).output().expect("scripts/rootfs");
    assert!(out.status.success(), "scripts/rootfs {kind}: {}", text(&out.stderr));
    PathBuf::from(text(&out.stdout).trim())
}

/// A fresh copy of the cached root.
pub fn extracted() -> tempfile::TempDir {
    let tar = cached_rootfs("minbase");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("tar").arg("-xpf").arg(&tar).arg("-C").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "tar: {}", text(&out.stderr));
    dir
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn mint(dir: &Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=node-init test proxy CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
        ],
        dir,
    );
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "srv.pem",
        ],
        dir,
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server` on a free loopback port, answered once it accepts.
fn tls_server(dir: &Path) -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "srv.pem",
            "-key",
            "srv.key",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "TLS server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child), port)
}

fn curl_in(root: &Path, port: u16) -> std::process::Output {
    Command::new("chroot")
        .arg(root)
        .args(["curl", "-sS", "--max-time", "10", "--noproxy", "*", &format!("https://127.0.0.1:{port}/")])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap()
}

#[test]
fn proxy_ca_reaches_the_real_trust_store_and_curl_trusts_it() {
    let root = extracted();
    let certs = tempfile::tempdir().unwrap();
    mint(certs.path());
    let (_server, port) = tls_server(certs.path());

    let before = curl_in(root.path(), port);
    assert_eq!(before.status.code(), Some(60), "curl trusted the CA before node-init: {}", text(&before.stderr));

    let ca = std::fs::read_to_string(certs.path().join("ca.pem")).unwrap();
    let cfg = certs.path().join("config.yaml");
    std::fs::write(&cfg, format!("proxy:\n  ca_cert: |\n{}", yaml_block(&ca, 4))).unwrap();
    let root_arg = root.path().to_str().unwrap();
    let out = node_init(&["run", "--root", root_arg, "--config", cfg.to_str().unwrap(), "--only", "proxy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let bundle = std::fs::read_to_string(root.path().join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    let body: String = ca.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("\n");
    assert!(bundle.contains(&body), "the system bundle does not hold the CA");
    let after = curl_in(root.path(), port);
    assert_eq!(after.status.code(), Some(0), "curl does not trust the CA: {}", text(&after.stderr));

    // A rerun changes nothing: the bundle is not even rewritten.
    let bundle_path = root.path().join("etc/ssl/certs/ca-certificates.crt");
    let mtime = std::fs::metadata(&bundle_path).unwrap().modified().unwrap();
    let state = root.path().join("var/lib/node-init/state.json");
    std::fs::remove_file(&state).unwrap();
    let again = node_init(&["run", "--root", root_arg, "--config", cfg.to_str().unwrap(), "--only", "proxy"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(std::fs::metadata(&bundle_path).unwrap().modified().unwrap(), mtime);

    // Removing the CA from the config takes it out of the bundle again.
    std::fs::write(&cfg, "hostname: node1.maas\n").unwrap();
    let off = node_init(&["run", "--root", root_arg, "--config", cfg.to_str().unwrap(), "--only", "proxy"]);
    assert_eq!(off.status.code(), Some(0), "{}", text(&off.stderr));
    assert!(!std::fs::read_to_string(&bundle_path).unwrap().contains(&body));
    assert_eq!(curl_in(root.path(), port).status.code(), Some(60));
}
