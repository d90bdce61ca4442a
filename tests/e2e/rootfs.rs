//! The real-rootfs tier: a Debian bookworm minbase root made by mmdebstrap
//! (built once per machine by `scripts/rootfs`, cached under
//! `target/rootfs/`), extracted per test, and node-init run into it with
//! `--root`, so the image's own `update-ca-certificates` and `curl` do the
//! work.

use std::net::SocketAddr;
use std::path::Path;

use node_init_tests::net::{Background, tls_server};
use node_init_tests::rootfs::{chroot, extracted};
use node_init_tests::*;

/// The root's own curl, asking `server` over TLS with no proxy.
fn curl_in(root: &Path, server: SocketAddr) -> std::process::Output {
    output(&mut chroot(root, &["curl", "-sS", "--max-time", "10", "--noproxy", "*", &format!("https://{server}/")]))
}

#[test]
fn proxy_ca_reaches_the_real_trust_store_and_curl_trusts_it() {
    let root = extracted();
    let certs = tempfile::tempdir().unwrap();
    // A server for 127.0.0.1 whose certificate a new CA signed.
    let bg = Background::new();
    let (server, ca) = tls_server(&bg, "127.0.0.1:0".parse().unwrap(), &["127.0.0.1"]);

    let before = curl_in(root.path(), server);
    assert_eq!(before.status.code(), Some(60), "curl trusted the CA before node-init: {}", text(&before.stderr));

    let cfg = certs.path().join("config.yaml");
    std::fs::write(&cfg, format!("proxy:\n  ca_cert: |\n{}", yaml_block(&ca, 4))).unwrap();
    let root_arg = root.path().to_str().unwrap();
    let out = node_init(&["run", "--root", root_arg, "--config", cfg.to_str().unwrap(), "--only", "proxy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let bundle = std::fs::read_to_string(root.path().join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    let body: String = ca.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("\n");
    assert!(bundle.contains(&body), "the system bundle does not hold the CA");
    let after = curl_in(root.path(), server);
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
    assert_eq!(curl_in(root.path(), server).status.code(), Some(60));
}
