//! `node-init cert-hash` against openssl's SPKI digest, for the three key
//! types a cluster CA may have.

use std::process::Command;

use node_init_tests::*;

fn openssl_pin(pem_path: &str) -> String {
    let pubkey =
        Command::new("openssl").args(["x509", "-pubkey", "-noout", "-in", pem_path]).output().expect("openssl x509");
    assert!(pubkey.status.success(), "{}", text(&pubkey.stderr));
    let dir = tempfile::tempdir().unwrap();
    let pub_path = dir.path().join("pub.pem");
    std::fs::write(&pub_path, &pubkey.stdout).unwrap();
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-in", pub_path.to_str().unwrap(), "-outform", "der"])
        .output()
        .expect("openssl pkey");
    assert!(der.status.success(), "{}", text(&der.stderr));
    let digest = Command::new("openssl")
        .args(["dgst", "-sha256", "-hex", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&der.stdout)?;
            c.wait_with_output()
        })
        .expect("openssl dgst");
    format!("sha256:{}", text(&digest.stdout).split_whitespace().next().unwrap())
}

#[test]
fn matches_openssl_for_rsa_ecdsa_and_ed25519() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        ("rsa", vec!["-newkey", "rsa:2048"]),
        ("ecdsa", vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        ("ed25519", vec!["-newkey", "ed25519"]),
    ] {
        let pem = dir.path().join(format!("{name}.pem"));
        let key = dir.path().join(format!("{name}.key"));
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=kubernetes"]).args(&args);
        cmd.args(["-keyout", key.to_str().unwrap(), "-out", pem.to_str().unwrap()]);
        let made = cmd.output().expect("openssl req");
        assert!(made.status.success(), "{name}: {}", text(&made.stderr));
        let out = node_init(&["cert-hash", pem.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        let ours = text(&out.stdout).trim().to_owned();
        assert_eq!(ours, openssl_pin(pem.to_str().unwrap()), "{name}");
        assert!(ours.starts_with("sha256:") && ours.len() == 71, "{ours}");
    }
}

#[test]
fn not_a_certificate_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("junk.pem");
    std::fs::write(&f, "hello").unwrap();
    let out = node_init(&["cert-hash", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("junk.pem"), "{}", text(&out.stderr));
}
