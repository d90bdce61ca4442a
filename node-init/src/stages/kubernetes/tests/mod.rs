use node_init_tests::kube::{ClusterCa, Serve, api_server};
use node_init_tests::net::Background;
use node_init_tests::yaml_block;

use super::*;
use crate::config;
use crate::pipeline::End;
use crate::state::{self, Status};
use crate::testing::World;

const TOKEN: &str = "abcdef.0123456789abcdef";
const CERT_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/");

/// Runs the pipeline with only this stage for node1.maas. `paused` time
/// makes the backoff waits free, but must not be used with real network I/O.
fn run(w: &World, yaml: &str, paused: bool) -> End {
    w.run(&[&KubernetesStage], &config::parse(yaml, "test").unwrap(), paused)
}

/// What a node named `name` with no addresses contributes: the name and
/// the config's kubelet flags.
fn local(k: &Kubernetes, name: Option<&str>) -> Local {
    let node = crate::node::Node { fqdn: name.map(str::to_owned).ok_or_else(String::new), ..Default::default() };
    local::derive(&node, k).unwrap()
}

fn token() -> crate::config::values::Token {
    TOKEN.parse().unwrap()
}

/// The init config, with the certificate key only init has.
fn init_config(k: &Kubernetes, v: KubeVersion, name: Option<&str>) -> String {
    let Member::Init { certificate_key, .. } = &k.member else { panic!("not an init config") };
    render::init_config(k, &token(), certificate_key, v, &local(k, name))
}

fn join_yaml(role: &str, endpoint: &str, hash: &str, extra: &str) -> String {
    format!(
        "kubernetes:\n  role: {role}\n  endpoint: {endpoint}\n  version: v1.31.4\n  token: {TOKEN}\n  \
         ca_cert_hashes: [{hash}]\n  certificate_key: {CERT_KEY}\n  discovery_timeout: 2s\n{extra}"
    )
}

fn init_yaml(version: &str, ca: &ClusterCa) -> String {
    format!(
        "kubernetes:\n  role: init\n  endpoint: 10.11.12.100:6443\n{version}  token: {TOKEN}\n  certificate_key: {CERT_KEY}\n  \
         vip: {{interface: eth0}}\n  ca:\n    cert: |\n{}    key: |\n{}",
        yaml_block(&ca.cert_pem, 6),
        yaml_block(&ca.key_pem, 6)
    )
}

// --- rendering, against golden files -------------------------------------

fn golden(name: &str, rendered: &str) {
    crate::testing::golden("kubeadm", name, rendered);
}

fn golden_config(role: &str) -> Kubernetes {
    let ca = "    cert: |\n".to_owned()
        + &yaml_block(&std::fs::read_to_string(format!("{FIXTURES}pki/ca-ec.crt")).unwrap(), 6)
        + "    key: |\n"
        + &yaml_block(&std::fs::read_to_string(format!("{FIXTURES}pki/ca-ec-sec1.key")).unwrap(), 6);
    let yaml = format!(
        "kubernetes:\n  role: {role}\n  endpoint: 10.11.12.100:6443\n  token: {TOKEN}\n  certificate_key: {CERT_KEY}\n  \
         ca_cert_hashes: [sha256:{h}, sha256:{h2}]\n  vip: {{interface: eth0}}\n  \
         kubelet_extra_args: {{provider-id: 'maas:///zone1/abc123', node-labels: 'role=gw,tier=edge'}}\n{}",
        if role == "init" { format!("  ca:\n{ca}") } else { String::new() },
        h = "a".repeat(64),
        h2 = "0123456789".repeat(6) + "abcd",
    );
    config::parse(&yaml, "golden").unwrap().kubernetes.unwrap()
}

#[test]
fn kubeadm_configs_match_their_golden_files_for_every_role_and_api() {
    for (version, api) in [("v1.30.2", "v1beta3"), ("v1.31.4", "v1beta4")] {
        let v: KubeVersion = version.parse().unwrap();
        assert!(render::api_version(v).ends_with(api));
        golden(&format!("init-{api}.yaml"), &init_config(&golden_config("init"), v, Some("node1.maas")));
        for role in ["control-plane", "worker"] {
            golden(
                &format!("{role}-{api}.yaml"),
                &render::join_config(
                    &golden_config(role),
                    &token(),
                    v,
                    &local(&golden_config(role), Some("node2.maas")),
                ),
            );
        }
    }
    let k = golden_config("init");
    golden(
        "kube-vip-super-admin.yaml",
        &render::kube_vip_manifest(&k, k.vip.as_ref().unwrap(), "eth0", render::SUPER_ADMIN_CONF),
    );
}

#[test]
fn rendered_configs_are_yaml_with_the_values_kubeadm_reads() {
    let k = golden_config("control-plane");
    for version in ["v1.30.2", "v1.31.4"] {
        let v: KubeVersion = version.parse().unwrap();
        let text = render::join_config(&k, &token(), v, &local(&k, Some("node2.maas")));
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(doc["discovery"]["bootstrapToken"]["token"], TOKEN);
        assert_eq!(doc["discovery"]["bootstrapToken"]["caCertHashes"].as_array().unwrap().len(), 2);
        assert_eq!(doc["controlPlane"]["certificateKey"], CERT_KEY);
        assert_eq!(doc["nodeRegistration"]["name"], "node2.maas");
        let args = &doc["nodeRegistration"]["kubeletExtraArgs"];
        if version == "v1.31.4" {
            assert_eq!(args[1]["name"], "provider-id");
            assert_eq!(args[1]["value"], "maas:///zone1/abc123");
            assert_eq!(doc["timeouts"]["discovery"], "5m0s");
        } else {
            assert_eq!(args["provider-id"], "maas:///zone1/abc123");
            assert_eq!(doc["discovery"]["timeout"], "5m0s");
        }
    }
    let init = init_config(&golden_config("init"), "v1.31.4".parse().unwrap(), None);
    let docs: Vec<serde_json::Value> = init.split("---\n").map(|d| serde_saphyr::from_str(d).unwrap()).collect();
    assert_eq!(docs[1]["controlPlaneEndpoint"], "10.11.12.100:6443");
    assert_eq!(docs[1]["networking"]["podSubnet"], "192.168.0.0/16");
    assert_eq!(docs[0]["bootstrapTokens"][0]["token"], TOKEN);
    assert!(docs[0]["nodeRegistration"].get("name").is_none());
}

#[test]
fn go_durations() {
    use std::time::Duration;
    assert_eq!(render::go_duration(Duration::from_secs(300)), "5m0s");
    assert_eq!(render::go_duration(Duration::from_secs(86400)), "24h0m0s");
    assert_eq!(render::go_duration(Duration::from_secs(42)), "42s");
    assert_eq!(render::go_duration(Duration::from_secs(3725)), "1h2m5s");
}

// --- join: discovery first, kubeadm only when it passed -------------------

fn served(serve: Serve) -> (Background, ClusterCa, node_init_tests::kube::ApiServer) {
    let bg = Background::new();
    let ca = ClusterCa::new();
    let server = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &ca, TOKEN, serve);
    (bg, ca, server)
}

#[test]
fn a_worker_joins_after_discovery_proves_the_cluster() {
    let (_bg, ca, server) = served(Serve::Good);
    let w = World::new();
    let yaml = join_yaml("worker", &server.addr.to_string(), &ca.hash(), "");
    assert_eq!(run(&w, &yaml, false), End::Done);
    assert_eq!(w.runner.argvs(), ["kubeadm join --config /etc/node-init/kubeadm.yaml"]);
    // Once without trust, once trusting only the pinned CA.
    assert_eq!(server.requests(), 2);
    let k = config::parse(&yaml, "t").unwrap().kubernetes.unwrap();
    assert_eq!(
        w.read(KUBEADM_CONFIG),
        render::join_config(&k, &token(), "v1.31.4".parse().unwrap(), &local(&k, Some("node1.maas")))
            .replace(TOKEN, "scrubbed"),
        "the config kubeadm read, without the token once joined"
    );
    assert_eq!(w.mode(KUBEADM_CONFIG), 0o600);
    assert_eq!(w.read(BOOTSTRAP_SUCCESS), "success\n");
    let rec = w.record("kubernetes");
    assert_eq!(rec.status, Status::Done);
    assert_eq!(rec.details["ca_pin"], ca.hash().as_str());
    assert_eq!(rec.details["kubeadm_api"], "kubeadm.k8s.io/v1beta4");
    let state = w.read(state::STATE_PATH);
    assert!(!state.contains("0123456789abcdef") && !state.contains(CERT_KEY), "a secret reached the state: {state}");
}

/// Runs a join that must be refused; returns the stage's error.
fn refused(serve: Serve, hash: Option<&str>) -> (String, usize) {
    let (_bg, ca, server) = served(serve);
    let w = World::new();
    let hash = hash.map_or_else(|| ca.hash(), str::to_owned);
    assert_eq!(run(&w, &join_yaml("control-plane", &server.addr.to_string(), &hash, ""), false), End::Failed);
    assert!(w.runner.calls().is_empty(), "kubeadm was called: {:?}", w.runner.argvs());
    assert!(!w.root.exists(BOOTSTRAP_SUCCESS));
    let rec = w.record("kubernetes");
    assert_eq!(rec.status, Status::Failed);
    (rec.last_error.unwrap(), server.requests())
}

#[test]
fn a_wrong_ca_hash_is_refused_at_once_naming_both_hashes() {
    let other = format!("sha256:{}", "b".repeat(64));
    let (err, requests) = refused(Serve::Good, Some(&other));
    assert!(err.contains("refusing to join") && err.contains("the cluster CA is not pinned"), "{err}");
    assert!(err.contains(&other), "{err}");
    assert_eq!(requests, 1, "a refusal is not retried");
}

#[test]
fn a_wrong_token_secret_is_a_bad_signature() {
    let (err, requests) = refused(Serve::WrongSecret, None);
    assert!(err.contains("jws-kubeconfig-abcdef: bad signature"), "{err}");
    assert!(!err.contains("0123456789abcdef"), "the secret leaked: {err}");
    assert_eq!(requests, 1);
}

#[test]
fn a_missing_signature_is_waited_for_then_named() {
    let (err, requests) = refused(Serve::NoSignature, None);
    assert!(err.contains("no signature for token id abcdef (signed for: zzzzzz)"), "{err}");
    assert!(err.contains("gave up after"), "{err}");
    assert!(requests >= 2, "not retried: {requests}");
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let (err, _) = refused(Serve::OtherCa, None);
    assert!(err.contains("the API server's certificate is not from the pinned CA"), "{err}");
}

#[test]
fn a_closed_endpoint_fails_in_the_tcp_step() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let w = World::new();
    let started = std::time::Instant::now();
    let hash = format!("sha256:{}", "c".repeat(64));
    assert_eq!(run(&w, &join_yaml("worker", &format!("127.0.0.1:{port}"), &hash, ""), false), End::Failed);
    let err = w.record("kubernetes").last_error.unwrap();
    assert!(err.contains(&format!("TCP to 127.0.0.1:{port}")) && err.contains("refused"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "discovery_timeout 2s not kept");
    assert!(w.runner.calls().is_empty());
}

#[test]
fn a_control_plane_join_runs_kube_vip_from_admin_conf_after_joining() {
    let (_bg, ca, server) = served(Serve::Good);
    let w = World::new();
    let yaml = join_yaml("control-plane", &server.addr.to_string(), &ca.hash(), "");
    // kube-vip needs the endpoint to be an IP; the loopback stand-in is one.
    let yaml = yaml + "  vip: {interface: lo}\n";
    assert_eq!(run(&w, &yaml, false), End::Done);
    let manifest = w.read(render::KUBE_VIP_MANIFEST);
    assert!(manifest.contains("path: /etc/kubernetes/admin.conf"), "{manifest}");
    // kubeadm read the key; once joined, it is scrubbed from the file.
    assert!(w.read(KUBEADM_CONFIG).contains("certificateKey: scrubbed"));
}

// --- init, retries and resets ---------------------------------------------

#[test]
fn init_lays_down_the_ca_and_kube_vip_then_switches_kube_vip_to_admin_conf() {
    let ca = ClusterCa::new();
    let w = World::new();
    assert_eq!(run(&w, &init_yaml("  version: v1.30.2\n", &ca), true), End::Done);
    assert_eq!(w.runner.argvs(), ["kubeadm init --config /etc/node-init/kubeadm.yaml --upload-certs"]);
    assert_eq!(w.read(CA_CERT), ca.cert_pem);
    assert_eq!(w.read(CA_KEY), ca.key_pem);
    assert_eq!(w.mode(CA_KEY), 0o600);
    assert_eq!(w.mode(KUBEADM_CONFIG), 0o600);
    assert!(w.read(KUBEADM_CONFIG).contains("kubeadm.k8s.io/v1beta3"));
    assert!(w.read(render::KUBE_VIP_MANIFEST).contains("path: /etc/kubernetes/admin.conf"));
    assert!(w.read(render::KUBE_VIP_MANIFEST).contains("value: \"10.11.12.100\""));
    assert_eq!(w.read(BOOTSTRAP_SUCCESS), "success\n");
    let state = w.read(state::STATE_PATH);
    assert!(!state.contains("PRIVATE KEY") && !state.contains(CERT_KEY), "{state}");
}

#[test]
fn kubeadm_failing_twice_is_reset_and_retried() {
    let ca = ClusterCa::new();
    let w = World::new();
    w.runner.answer(1, "", "[ERROR Port-6443]: Port 6443 is in use\n");
    w.runner.answer(0, "", "");
    w.runner.answer(1, "", "timed out waiting for the condition\n");
    w.runner.answer(0, "", "");
    w.runner.answer(0, "Your Kubernetes control-plane has initialized successfully!\n", "");
    assert_eq!(run(&w, &init_yaml("  version: v1.31.4\n", &ca), true), End::Done);
    let init = "kubeadm init --config /etc/node-init/kubeadm.yaml --upload-certs";
    assert_eq!(w.runner.argvs(), [init, "kubeadm reset -f", init, "kubeadm reset -f", init]);
    assert_eq!(w.record("kubernetes").details["kubeadm_attempts"], 3);
}

#[test]
fn kubeadm_failing_every_time_gives_up_with_its_output() {
    let ca = ClusterCa::new();
    let w = World::new();
    for _ in 0..3 {
        let hint = format!("kubeadm join 10.11.12.100:6443 --token {TOKEN} --certificate-key {CERT_KEY}\n");
        w.runner.answer(1, &hint, "[ERROR CRI]: container runtime is not running\n");
        w.runner.answer(0, "", "");
    }
    assert_eq!(run(&w, &init_yaml("  version: v1.31.4\n", &ca), true), End::Failed);
    assert_eq!(w.runner.calls().len(), 5, "{:?}", w.runner.argvs());
    let err = w.record("kubernetes").last_error.unwrap();
    assert!(err.contains("failed 3 times") && err.contains("container runtime is not running"), "{err}");
    assert!(err.contains("--token abcdef.<redacted> --certificate-key <redacted>"), "{err}");
    assert!(!w.root.exists(BOOTSTRAP_SUCCESS));
}

#[test]
fn leftovers_of_an_interrupted_run_are_reset_first() {
    let ca = ClusterCa::new();
    let w = World::new();
    w.root.write("/etc/kubernetes/admin.conf", b"half", 0o600).unwrap();
    assert_eq!(run(&w, &init_yaml("  version: v1.31.4\n", &ca), true), End::Done);
    assert_eq!(w.runner.argvs()[0], "kubeadm reset -f");
    assert_eq!(w.runner.calls().len(), 2);
}

#[test]
fn without_a_version_kubeadm_is_asked_for_its_own() {
    let ca = ClusterCa::new();
    let w = World::new();
    w.runner.answer(0, "v1.28.9\n", "");
    assert_eq!(run(&w, &init_yaml("", &ca), true), End::Done);
    assert_eq!(w.runner.argvs()[0], "kubeadm version -o short");
    assert!(w.read(KUBEADM_CONFIG).contains("kubernetesVersion: v1.28.9"));
    assert_eq!(w.record("kubernetes").details["kubeadm_api"], "kubeadm.k8s.io/v1beta3");
    // Below 1.29 kube-vip reads admin.conf throughout.
    assert!(w.read(render::KUBE_VIP_MANIFEST).contains("path: /etc/kubernetes/admin.conf"));
}

#[test]
fn no_kubernetes_key_skips() {
    let w = World::new();
    assert_eq!(run(&w, "{}\n", true), End::Done);
    assert_eq!(w.record("kubernetes").status, Status::Skipped);
    assert!(w.runner.calls().is_empty());
}

#[test]
fn derived_addresses_reach_kubeadm_as_advertise_address_and_node_ip() {
    let l = Local {
        name: Some("node1.dc1.example".into()),
        advertise: Some("10.11.12.21".parse().unwrap()),
        kubelet_args: [("node-ip".to_owned(), "10.11.12.21".to_owned())].into(),
        vip_interface: Some("bond0".into()),
    };
    let v: KubeVersion = "v1.31.4".parse().unwrap();
    let k = golden_config("init");
    let Member::Init { certificate_key, .. } = &k.member else { unreachable!() };
    let init = render::init_config(&k, &token(), certificate_key, v, &l);
    let doc: serde_json::Value = serde_saphyr::from_str(init.split("---\n").next().unwrap()).unwrap();
    assert_eq!(doc["localAPIEndpoint"]["advertiseAddress"], "10.11.12.21");
    assert_eq!(doc["nodeRegistration"]["kubeletExtraArgs"][0]["name"], "node-ip");
    assert_eq!(doc["nodeRegistration"]["kubeletExtraArgs"][0]["value"], "10.11.12.21");
    let join = render::join_config(&golden_config("control-plane"), &token(), v, &l);
    let doc: serde_json::Value = serde_saphyr::from_str(&join).unwrap();
    assert_eq!(doc["controlPlane"]["localAPIEndpoint"]["advertiseAddress"], "10.11.12.21");
    let vip = render::kube_vip_manifest(&k, k.vip.as_ref().unwrap(), "bond0", render::ADMIN_CONF);
    assert!(vip.contains("value: \"bond0\""), "{vip}");
}

#[test]
fn the_init_token_lives_token_ttl_and_0s_never_expires() {
    let ca = ClusterCa::new();
    for (ttl, want) in [("", "24h0m0s"), ("  token_ttl: 2h\n", "2h0m0s"), ("  token_ttl: 0s\n", "0s")] {
        let k = config::parse(&(init_yaml("  version: v1.31.4\n", &ca) + ttl), "t").unwrap().kubernetes.unwrap();
        let init = init_config(&k, "v1.31.4".parse().unwrap(), None);
        let doc: serde_json::Value = serde_saphyr::from_str(init.split("---\n").next().unwrap()).unwrap();
        assert_eq!(doc["bootstrapTokens"][0]["ttl"], want, "{ttl}");
    }
}

mod membership;

// --- the join material, scrubbed after the join ----------------------------

fn print(yaml: &str) -> String {
    let mut f = Fingerprint::new(b"node key");
    KubernetesStage.inputs(&config::parse(yaml, "t").unwrap(), &mut f);
    f.finish()
}

#[test]
fn scrubbing_the_join_material_leaves_the_stage_fingerprint_as_it_was() {
    let ca = ClusterCa::new();
    let init = init_yaml("  version: v1.31.4\n", &ca);
    let scrubbed = scrub::scrub_config_text(&init, "t").unwrap().unwrap().0;
    assert!(!scrubbed.contains(TOKEN) && !scrubbed.contains(CERT_KEY) && !scrubbed.contains("PRIVATE KEY"));
    assert_eq!(print(&init), print(&scrubbed));
    let worker = join_yaml("worker", "10.11.12.100:6443", &format!("sha256:{}", "a".repeat(64)), "");
    assert_eq!(print(&worker), print(&scrub::scrub_config_text(&worker, "t").unwrap().unwrap().0));
    assert_ne!(print(&worker), print(&worker.replace("role: worker", "role: control-plane")));
}

#[test]
fn init_scrubs_its_config_layers_and_the_rerun_on_the_scrubbed_config_is_settled() {
    let ca = ClusterCa::new();
    let w = World::new();
    let layer = crate::config::USERDATA_LAYER;
    w.root.write(layer, init_yaml("  version: v1.31.4\n", &ca).as_bytes(), 0o600).unwrap();
    let loaded = config::load(&w.root, None).unwrap();
    assert_eq!(w.run(&[&KubernetesStage], &loaded.config, true), End::Done);
    let calls = w.runner.calls().len();
    let text = w.read(layer);
    assert!(text.contains("token: scrubbed") && text.contains("certificate_key: scrubbed"), "{text}");
    assert!(!text.contains("PRIVATE KEY") && text.contains("BEGIN CERTIFICATE"), "{text}");
    assert_eq!(w.mode(layer), 0o600);
    let kubeadm = w.read(KUBEADM_CONFIG);
    assert!(!kubeadm.contains(TOKEN) && !kubeadm.contains(CERT_KEY), "{kubeadm}");
    assert!(w.read(CA_KEY).contains("PRIVATE KEY"), "kubeadm keeps the CA key");
    let scrubbed = w.record("kubernetes").details["scrubbed"].to_string();
    assert!(scrubbed.contains(layer) && scrubbed.contains("kubernetes.ca.key"), "{scrubbed}");

    let again = config::load(&w.root, None).unwrap();
    assert!(again.config.kubernetes.as_ref().unwrap().scrubbed());
    assert_eq!(w.run(&[&KubernetesStage], &again.config, true), End::Done);
    assert_eq!(w.runner.calls().len(), calls, "the settled stage ran again");
}

#[test]
fn a_scrubbed_node_that_is_no_member_fails_pointing_at_join_material_and_never_runs_kubeadm() {
    let w = World::new();
    let yaml = join_yaml("control-plane", "10.11.12.100:6443", &format!("sha256:{}", "a".repeat(64)), "")
        .replace(TOKEN, "scrubbed")
        .replace(CERT_KEY, "scrubbed");
    assert_eq!(run(&w, &yaml, true), End::Failed);
    let err = w.record("kubernetes").last_error.unwrap();
    assert!(err.contains("reads `scrubbed`") && err.contains("node-init join-material --role control-plane"), "{err}");
    assert!(w.runner.calls().is_empty(), "{:?}", w.runner.argvs());
}
