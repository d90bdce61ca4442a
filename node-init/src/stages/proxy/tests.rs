//! Sandbox tests: a temp root, a recording runner, golden files under
//! `tests/fixtures/proxy/` (regenerate with `NODE_INIT_UPDATE_GOLDEN=1`).

use super::*;
use crate::config;
use crate::net::Address;
use crate::pipeline::End;
use crate::testing::{DEBIAN, RHEL, World};

const CONFIG: &str = r#"
proxy:
  http: http://proxyuser:pa%24%24word@10.0.0.1:3128
  https: http://proxyuser:pa%24%24word@10.0.0.1:3128
  no_proxy: [maas.company.com, 10.10.0.0/16, .corp]
kubernetes:
  role: worker
  endpoint: 10.11.12.100:6443
  token: abcdef.0123456789abcdef
  ca_cert_hashes: ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
"#;

/// A Debian or RHEL root for node1.maas at 10.11.12.21, MAAS at 10.11.12.2.
fn sandbox(os_release: &str) -> World {
    let mut w = World::with_os(os_release);
    w.write("/etc/environment", "PATH=\"/usr/local/sbin:/usr/bin\"\nLANG=C.UTF-8\n");
    w.node.addresses = vec![Address { interface: "eth0".into(), net: "10.11.12.21/24".parse().unwrap() }];
    w.node.maas_server = Some("10.11.12.2".into());
    w
}

fn golden(name: &str, actual: &str) {
    crate::testing::golden("proxy", name, actual);
}

fn mint_ca() -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Test Proxy CA");
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert.der().to_vec())
}

#[test]
fn debian_files_match_their_golden_files() {
    let s = sandbox(DEBIAN);
    let cfg = config::parse(CONFIG, "t").unwrap();
    assert!(matches!(s.stage(&ProxyStage, &cfg).unwrap(), Outcome::Done(_)));
    golden("environment", &s.read(ENVIRONMENT));
    golden("profile.sh", &s.read(PROFILE));
    golden("apt.conf", &s.read(APT));
    golden("system.conf", &s.read(MANAGER));
    golden("service-drop-in.conf", &s.read(DROP_INS[0]));
    assert_eq!(s.read(DROP_INS[0]), s.read(DROP_INS[1]));
    assert!(s.runner.calls().is_empty(), "no CA configured: no trust store update");
}

#[test]
fn rerun_changes_nothing_and_removal_restores_the_root() {
    let s = sandbox(DEBIAN);
    let before = s.snapshot();
    let cfg = config::parse(CONFIG, "t").unwrap();
    s.stage(&ProxyStage, &cfg).unwrap();
    let after = s.snapshot();
    s.stage(&ProxyStage, &cfg).unwrap();
    assert_eq!(s.snapshot(), after, "a rerun is byte-identical");

    let off = config::parse("", "t").unwrap();
    assert!(matches!(s.stage(&ProxyStage, &off).unwrap(), Outcome::Done(_)));
    assert_eq!(s.snapshot(), before, "turning the proxy off removes exactly what was written");
    assert!(matches!(s.stage(&ProxyStage, &off).unwrap(), Outcome::Skipped(_)));
}

#[test]
fn password_files_are_root_only() {
    let s = sandbox(DEBIAN);
    s.stage(&ProxyStage, &config::parse(CONFIG, "t").unwrap()).unwrap();
    assert_eq!(s.mode(APT), 0o600);
    assert_eq!(s.mode(MANAGER), 0o600);
    assert_eq!(s.mode(DROP_INS[0]), 0o600);
    assert_eq!(s.mode(PROFILE), 0o644);
}

#[test]
fn ca_goes_to_the_anchor_dir_and_must_reach_the_bundle() {
    let s = sandbox(DEBIAN);
    let (pem, der) = mint_ca();
    let cfg = config::parse(&format!("proxy:\n  ca_cert: |\n{}", indent(&pem)), "t").unwrap();
    // The recording runner does not really update the bundle: the check fails.
    let err = format!("{:#}", s.stage(&ProxyStage, &cfg).unwrap_err());
    assert!(err.contains("does not hold the proxy CA"), "{err}");
    assert_eq!(s.runner.argvs(), ["update-ca-certificates"]);
    let anchor = s.read("/usr/local/share/ca-certificates/node-init-proxy-ca.crt");
    assert_eq!(crate::pki::pem_certificates(anchor.as_bytes()).unwrap(), std::slice::from_ref(&der));

    // Once the bundle holds it, the stage passes; a rerun runs nothing.
    s.root.write("/etc/ssl/certs/ca-certificates.crt", crate::pki::pem_encode(&der).as_bytes(), 0o644).unwrap();
    s.stage(&ProxyStage, &cfg).unwrap();
    assert_eq!(s.runner.argvs().len(), 1, "anchor unchanged and bundle complete: no update");
}

#[test]
fn a_partial_bundle_a_killed_update_left_is_removed_and_the_store_rebuilt_fresh() {
    let s = sandbox(DEBIAN);
    let (pem, der) = mint_ca();
    let cfg = config::parse(&format!("proxy:\n  ca_cert: |\n{}", indent(&pem)), "t").unwrap();
    s.root.write("/etc/ssl/certs/ca-certificates.crt", crate::pki::pem_encode(&der).as_bytes(), 0o644).unwrap();
    s.stage(&ProxyStage, &cfg).unwrap();
    // Killed while appending: the next plain run would append to this.
    s.root.write(trust::DEBIAN_PARTIAL_BUNDLE, b"-----BEGIN CERTIFICATE-----\nMIIH0zCCBbug", 0o600).unwrap();
    s.stage(&ProxyStage, &cfg).unwrap();
    assert_eq!(s.runner.argvs(), ["update-ca-certificates", "update-ca-certificates --fresh"]);
    assert!(!s.root.exists(trust::DEBIAN_PARTIAL_BUNDLE));
    s.stage(&ProxyStage, &cfg).unwrap();
    assert_eq!(s.runner.argvs().len(), 2, "repaired: a rerun runs nothing");
}

#[test]
fn anchors_in_place_that_the_bundle_lacks_are_taken_in_fresh() {
    let s = sandbox(DEBIAN);
    let (pem, _) = mint_ca();
    let cfg = config::parse(&format!("proxy:\n  ca_cert: |\n{}", indent(&pem)), "t").unwrap();
    // The update is cut off after the anchor was written: its link is
    // there, so a plain rerun would neither rehash nor tell the hooks.
    assert!(s.stage(&ProxyStage, &cfg).is_err());
    assert!(s.stage(&ProxyStage, &cfg).is_err());
    assert_eq!(s.runner.argvs(), ["update-ca-certificates", "update-ca-certificates --fresh"]);
}

#[test]
fn a_missing_update_tool_fails_with_its_stderr() {
    let s = sandbox(DEBIAN);
    let (pem, _) = mint_ca();
    let cfg = config::parse(&format!("proxy:\n  ca_cert: |\n{}", indent(&pem)), "t").unwrap();
    s.runner.answer(127, "", "chroot: failed to run command 'update-ca-certificates': No such file or directory");
    let err = format!("{:#}", s.stage(&ProxyStage, &cfg).unwrap_err());
    assert!(err.contains("`update-ca-certificates` exited with 127: chroot: failed to run command"), "{err}");
}

#[test]
fn rhel_family_uses_its_paths_and_commands() {
    let s = sandbox(RHEL);
    s.root.write(DNF, b"[main]\ngpgcheck=1\n", 0o644).unwrap();
    let (pem, der) = mint_ca();
    s.root.write("/etc/pki/tls/certs/ca-bundle.crt", crate::pki::pem_encode(&der).as_bytes(), 0o644).unwrap();
    let doc = format!("proxy:\n  https: http://10.0.0.1:3128\n  ca_cert: |\n{}", indent(&pem));
    let cfg = config::parse(&doc, "t").unwrap();
    s.stage(&ProxyStage, &cfg).unwrap();
    assert_eq!(s.runner.argvs(), ["update-ca-trust extract"]);
    assert!(s.root.exists("/etc/pki/ca-trust/source/anchors/node-init-proxy-ca.crt"));
    golden("dnf.conf", &s.read(DNF));
    assert!(!s.root.exists(APT));
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn rotating_only_the_proxy_password_reruns_the_stage_and_rewrites_every_file() {
    let w = sandbox(DEBIAN);
    let with = |pw: &str| config::parse(&CONFIG.replace("pa%24%24word", pw), "t").unwrap();
    assert_eq!(w.run(&[&ProxyStage], &with("old-secret"), false), End::Done);
    assert_eq!(w.run(&[&ProxyStage], &with("new-secret"), false), End::Done);
    assert_eq!(w.record("proxy").attempts, 2, "the changed password made the settled stage run again");
    for path in [ENVIRONMENT, PROFILE, APT, MANAGER, DROP_INS[0], DROP_INS[1]] {
        let text = w.read(path);
        assert!(text.contains("new-secret"), "{path} lacks the new password:\n{text}");
        assert!(!text.contains("old-secret"), "{path} keeps the old password:\n{text}");
    }
    let state = w.read(crate::state::STATE_PATH);
    assert!(!state.contains("secret"), "the state file holds a password:\n{state}");
    assert_eq!(w.mode(crate::state::KEY_PATH), 0o600, "the fingerprint key is root's only");
    // The same password again: settled, nothing runs.
    assert_eq!(w.run(&[&ProxyStage], &with("new-secret"), false), End::Done);
    assert_eq!(w.record("proxy").attempts, 2);
}

#[test]
fn apt_keeps_maas_proxy_by_default_and_proxy_apt_decides() {
    let curtin = "Acquire::http::Proxy \"http://10.11.12.2:8000/\";\n";
    for (mode, with_curtin, ours) in
        [("", true, false), ("", false, true), ("  apt: proxy\n", true, true), ("  apt: none\n", false, false)]
    {
        let s = sandbox(DEBIAN);
        if with_curtin {
            s.write(CURTIN_APT, curtin);
        }
        let cfg = config::parse(&format!("proxy:\n  http: http://10.0.0.1:3128\n{mode}"), "t").unwrap();
        let Outcome::Done(done) = s.stage(&ProxyStage, &cfg).unwrap() else { panic!("not done") };
        assert_eq!(s.root.exists(APT), ours, "proxy.apt {mode:?}, curtin's file {with_curtin}");
        if with_curtin {
            assert_eq!(s.read(CURTIN_APT), curtin, "MAAS's apt proxy is never touched");
        }
        let line = done.summary.unwrap_or_default();
        if with_curtin && !ours {
            assert_eq!(line, format!("apt: MAAS's proxy ({CURTIN_APT})"));
        }
        // Everything else still gets the proxy.
        assert!(s.read(ENVIRONMENT).contains("http://10.0.0.1:3128"));
    }
}
