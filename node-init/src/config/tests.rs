//! Parsing of whole documents. The table of rejected documents, driven
//! through the real binary, lives in the tests crate (config_rejections).

use super::*;

const FULL: &str = r#"
hostname: node1.maas
os: {patch: true, reboot: always}
proxy:
  http: http://user:p4ssw0rd@10.0.0.1:3128
  https: http://user:p4ssw0rd@10.0.0.1:3128
  no_proxy: [maas.company.com, 10.10.0.0/16, .corp]
dns:
  domain: maas
  nameservers: [10.11.12.13, "10.11.12.14:5353"]
  require: [api.spectrocloud.com]
  timeout: 90s
kubernetes:
  role: worker
  endpoint: 10.11.12.100:6443
  version: v1.31.4
  token: abcdef.s3cr3ts3cr3ts3cr
  ca_cert_hashes: ["sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"]
resources: {cpus: 2, memory_mib: 4096, disk_gib: 20}
"#;

#[test]
fn full_document_parses() {
    let c = parse(FULL, "t").unwrap();
    assert_eq!(c.os.reboot, RebootPolicy::Always);
    assert_eq!(c.dns.nameservers[1].0.port(), 5353);
    assert_eq!(c.dns.timeout.0.as_secs(), 90);
    let k = c.kubernetes.unwrap();
    assert_eq!(k.role(), Role::Worker);
    assert_eq!(k.token().unwrap().id, "abcdef");
    assert_eq!(k.pod_cidr, default_pod_cidr());
    assert!(k.ca_cert_hashes()[0].0.ends_with("0123456789abcdef0123456789abcdef0123456789abcdef"));
}

#[test]
fn empty_document_is_all_defaults() {
    let c = parse("", "t").unwrap();
    assert_eq!(c.dns.domain.as_str(), "maas");
    assert_eq!(c.cidrs(), (default_pod_cidr(), default_service_cidr()));
    assert!(!c.os.patch);
    assert_eq!(c.os.reboot, RebootPolicy::IfRequired);
}

#[test]
fn duplicate_keys_are_refused() {
    let e = parse("dns: {domain: a}\ndns: {domain: b}\n", "t").unwrap_err();
    assert_eq!(e.key, "(document)");
    assert!(e.message.to_lowercase().contains("duplicate"), "{e}");
}

#[test]
fn a_yaml_error_does_not_quote_the_line() {
    let e = parse("kubernetes:\n  token: \"abcdef.0123456789abcdef\n  x: [\n", "t").unwrap_err();
    assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
}

#[test]
fn debug_of_a_config_holds_no_secret() {
    let c = parse(FULL, "t").unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(!shown.contains("p4ssw0rd"), "{shown}");
}

#[test]
fn peers_are_addresses_each_once_and_never_the_vip() {
    let worker = FULL.split("resources:").next().unwrap();
    let with = |peers: &str| parse(&format!("{worker}  peers: {peers}\n"), "t");
    let k = with("[10.11.12.21, {address: 10.11.12.31, role: worker}]").unwrap().kubernetes.unwrap();
    assert_eq!(k.peers.len(), 2);
    assert_eq!(k.peers[1].role, PeerRole::Worker);
    let e = with("[10.11.12.21, 10.11.12.21]").unwrap_err();
    assert_eq!(e.key, "kubernetes.peers[1]");
    assert!(e.message.contains("listed twice (also kubernetes.peers[0])"), "{e}");
    let e = with("[10.11.12.100]").unwrap_err();
    assert_eq!((e.key.as_str(), e.message.contains("the endpoint's VIP")), ("kubernetes.peers[0]", true), "{e}");
    let e = with("[10.11.12.21, node3.maas]").unwrap_err();
    assert_eq!(e.key, "kubernetes.peers[1]");
    assert!(e.message.contains("\"node3.maas\" is not an IP address"), "{e}");
    assert!(with("[127.0.0.1]").unwrap_err().message.contains("no node's address"));
}

#[test]
fn scrubbed_join_material_loads_as_a_joined_member_of_the_same_role() {
    let worker = FULL.replace("abcdef.s3cr3ts3cr3ts3cr", "scrubbed");
    let k = parse(&worker, "t").unwrap().kubernetes.unwrap();
    assert!(matches!(k.member, Member::Joined { role: Role::Worker, .. }), "{:?}", k.member);
    assert!(k.token().is_none() && k.certificate_key().is_none());
    assert_eq!(k.ca_cert_hashes().len(), 1, "the pins are no secret and stay");
    // Init: any scrubbed key is enough (a crash between two scrubbed layers
    // leaves the others), and the CA's certificate is no longer checked
    // against a key it lost.
    let init = "kubernetes:\n  role: init\n  endpoint: 10.0.0.1:6443\n  token: scrubbed\n  \
                certificate_key: scrubbed\n  ca: {cert: x, key: scrubbed}\n";
    assert!(parse(init, "t").is_err(), "the certificate is still parsed");
    let init = "kubernetes:\n  role: init\n  endpoint: 10.0.0.1:6443\n  token: scrubbed\n  \
                certificate_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n";
    let k = parse(init, "t").unwrap().kubernetes.unwrap();
    assert_eq!(k.role(), Role::Init);
    assert!(k.scrubbed() && k.vip.is_some(), "init keeps its VIP for kube-vip");
}

#[test]
fn scrubbed_is_accepted_only_for_the_secret_keys() {
    let hashes =
        FULL.replace("[\"sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\"]", "[scrubbed]");
    let e = parse(&hashes, "t").unwrap_err();
    assert!(e.key.starts_with("kubernetes.ca_cert_hashes"), "{e}");
    let e = parse(&FULL.replace("v1.31.4", "scrubbed"), "t").unwrap_err();
    assert_eq!(e.key, "kubernetes.version");
    // A worker has no certificate key to scrub: its token decides.
    let k = parse(&FULL.replace("  version:", "  certificate_key: scrubbed\n  version:"), "t");
    assert!(!k.unwrap().kubernetes.unwrap().scrubbed());
}
