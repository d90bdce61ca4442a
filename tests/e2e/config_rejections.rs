//! Every rejected document: exit 2, the key's path in the message, no
//! secret echoed, and not one file written or changed under the root.

use node_init_tests::*;

const TOKEN_SECRET: &str = "zz9secretzz9secr";

/// (what, document, key path the message must name, text that must not appear)
fn table() -> Vec<(&'static str, String, &'static str, Option<&'static str>)> {
    let (leaf, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, false);
    let expired = expired_ca();
    let other_key = rcgen::KeyPair::generate().expect("key").serialize_pem();
    let other_key_line: &'static str = other_key.lines().nth(1).expect("a PEM body").to_owned().leak();
    let worker = "kubernetes:\n  role: worker\n  endpoint: 10.0.0.1:6443\n  token: abcdef.0123456789abcdef\n  ca_cert_hashes: [\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"]\n";
    vec![
        ("unknown top-level key", "hostnme: a.maas\n".into(), "unknown field `hostnme`", None),
        ("unknown nested key", "dns:\n  domian: maas\n".into(), "dns.domian: unknown field `domian`", None),
        ("CIDR out of range", format!("{worker}  pod_cidr: 10.0.0.0/33\n"), "kubernetes.pod_cidr", None),
        ("CIDR with host bits", format!("{worker}  pod_cidr: 192.168.1.0/16\n"), "kubernetes.pod_cidr", None),
        ("overlapping CIDRs", format!("{worker}  pod_cidr: 10.96.0.0/16\n"), "kubernetes.service_cidr", None),
        (
            "malformed token",
            worker.replace("abcdef.0123456789abcdef", &format!("ABCDEF.{TOKEN_SECRET}")),
            "kubernetes.token",
            Some(TOKEN_SECRET),
        ),
        (
            "token of the wrong type",
            worker.replace("abcdef.0123456789abcdef", "123456789012"),
            "kubernetes.token",
            Some("123456789012"),
        ),
        ("malformed hash", worker.replace("sha256:0000", "sha1:0000"), "kubernetes.ca_cert_hashes[0]", None),
        ("short hash", worker.replace("0000000000000000\"", "\""), "kubernetes.ca_cert_hashes[0]", None),
        (
            "malformed certificate key",
            format!("{}  certificate_key: nothex{TOKEN_SECRET}\n", worker.replace("worker", "control-plane")),
            "kubernetes.certificate_key",
            Some(TOKEN_SECRET),
        ),
        ("unknown role", worker.replace("worker", "master"), "kubernetes.role", None),
        ("endpoint without port", worker.replace("10.0.0.1:6443", "10.0.0.1"), "kubernetes.endpoint", None),
        ("bad duration", "dns:\n  timeout: 5 minutes please\n".into(), "dns.timeout", None),
        (
            "proxy URL that does not parse",
            "proxy:\n  http: \"http://user:pw-s3cr3t@[bad\"\n".into(),
            "proxy.http",
            Some("pw-s3cr3t"),
        ),
        (
            "proxy URL with another scheme",
            "proxy:\n  https: ftp://user:pw-s3cr3t@10.0.0.1:21\n".into(),
            "proxy.https",
            Some("pw-s3cr3t"),
        ),
        ("CA that is not PEM", "proxy:\n  ca_cert: not a certificate\n".into(), "proxy.ca_cert", None),
        ("CA that is not a CA", format!("proxy:\n  ca_cert: |\n{}", yaml_block(&leaf, 4)), "proxy.ca_cert", None),
        ("expired CA", format!("proxy:\n  ca_cert: |\n{}", yaml_block(&expired, 4)), "proxy.ca_cert", None),
        ("unknown reboot policy", "os:\n  reboot: sometimes\n".into(), "os.reboot", None),
        ("patch as a string", "os:\n  patch: maybe\n".into(), "os.patch", None),
        ("nameserver as a name", "dns:\n  nameservers: [ns1.maas]\n".into(), "dns.nameservers[0]", None),
        ("invalid hostname", "hostname: \"bad host!\"\n".into(), "hostname", None),
        ("duplicate key", "dns:\n  domain: a\ndns:\n  domain: b\n".into(), "(document)", None),
        (
            "init without a CA",
            format!(
                "{}  certificate_key: {}\n  vip: {{interface: eth0}}\n",
                worker.replace("worker", "init"),
                "ab".repeat(32)
            ),
            "kubernetes.ca",
            None,
        ),
        (
            "join without a CA pin",
            worker.replace(
                "  ca_cert_hashes: [\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"]\n",
                "",
            ),
            "kubernetes.ca_cert_hashes",
            None,
        ),
        ("negative CPU minimum", "resources:\n  cpus: -1\n".into(), "resources.cpus", None),
        ("version without patch", format!("{worker}  version: \"1.31\"\n"), "kubernetes.version", None),
        (
            "no_proxy entry with a comma",
            "proxy:\n  http: http://10.0.0.1:3128\n  no_proxy: [\"a.corp,b.corp\"]\n".into(),
            "proxy.no_proxy[0]",
            None,
        ),
        (
            "CA key that is not a key",
            format!(
                "{}  certificate_key: {}\n  vip: {{interface: eth0}}\n  ca:\n    cert: |\n{}    key: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"\n",
                worker.replace("worker", "init"),
                "ab".repeat(32),
                yaml_block(&self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, true).0, 6)
            ),
            "kubernetes.ca.key",
            None,
        ),
        (
            "CA key of another CA",
            format!(
                "{}  certificate_key: {}\n  vip: {{interface: eth0}}\n  ca:\n    cert: |\n{}    key: |\n{}",
                worker.replace("worker", "init"),
                "ab".repeat(32),
                yaml_block(&self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, true).0, 6),
                yaml_block(&other_key, 6)
            ),
            "kubernetes.ca.key",
            Some(other_key_line),
        ),
        (
            "VIP with a named endpoint",
            format!("{}  vip: {{interface: eth0}}\n", worker.replace("10.0.0.1:6443", "api.maas:6443")),
            "kubernetes.endpoint",
            None,
        ),
        (
            "kubelet flag with dashes",
            format!("{worker}  kubelet_extra_args: {{--node-labels: a=b}}\n"),
            "kubernetes.kubelet_extra_args.--node-labels",
            None,
        ),
    ]
}

fn expired_ca() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.not_before = rcgen::date_time_ymd(2001, 1, 1);
    p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    p.self_signed(&key).expect("cert").pem()
}

#[test]
fn bad_documents_exit_2_name_the_key_and_change_nothing() {
    let cases = table();
    assert!(cases.len() >= 20);
    for (what, doc, key, secret) in cases {
        let root = FakeRoot::new();
        let cfg_dir = tempfile::tempdir().unwrap();
        let cfg = cfg_dir.path().join("config.yaml");
        std::fs::write(&cfg, &doc).unwrap();
        let before = root.snapshot();
        let out = node_init(&["run", "--root", &root.arg(), "--config", cfg.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(key), "{what}: expected {key:?} in: {err}");
        assert!(err.contains("invalid configuration in"), "{what}: {err}");
        if let Some(s) = secret {
            assert!(!err.contains(s), "{what}: secret echoed: {err}");
        }
        assert_eq!(root.snapshot(), before, "{what}: the root changed");
    }
}

#[test]
fn a_missing_config_file_is_exit_2() {
    let root = FakeRoot::new();
    let out = node_init(&["run", "--root", &root.arg(), "--config", "/nonexistent/config.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/config.yaml"));
}

#[test]
fn usage_errors_are_exit_2() {
    let root = FakeRoot::new();
    let out = node_init(&["run", "--root", &root.arg(), "--only", "nosuchstage"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown stage \"nosuchstage\""));
    assert_eq!(node_init(&["run", "--bogus-flag"]).status.code(), Some(2));
    assert_eq!(node_init(&["run", "--root", "/nonexistent-root"]).status.code(), Some(2));
}
