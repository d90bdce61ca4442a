//! A real containerd pulls through the CRI, as kubeadm does, from the real
//! distribution registry behind a TLS-intercepting proxy, inside a
//! namespace whose only way out is the proxy: no default route, and a
//! resolv.conf naming the namespace's own loopback, where nothing answers.

use std::process::Command;

use node_init_tests::cluster::{Secrets, userdata};
use node_init_tests::kube::{Serve, api_server};
use node_init_tests::kubeadm::Node;
use node_init_tests::net::Background;
use node_init_tests::registry::{Behind, Containerd, KUBE_VIP, kubernetes_images, split_reference};
use node_init_tests::{output, text};

const PAUSE: &str = "registry.k8s.io/pause:3.10";

/// The registry behind the proxy, holding registry.k8s.io/pause:3.10.
struct World {
    behind: Behind,
    pause_digest: String,
}

impl std::ops::Deref for World {
    type Target = Behind;
    fn deref(&self) -> &Behind {
        &self.behind
    }
}

impl World {
    fn new() -> Self {
        Self::routing(&["registry.k8s.io"])
    }

    /// The proxy sends each of `hosts` to the registry, which holds
    /// registry.k8s.io/pause:3.10.
    fn routing(hosts: &[&str]) -> Self {
        let behind = Behind::routing(hosts);
        let pause_digest = behind.registry.push("pause", "3.10", 4096);
        Self { behind, pause_digest }
    }

    /// A containerd of its own in the namespace, with `env` only.
    fn containerd(&self, name: &str, env: &[(&str, &str)]) -> Containerd {
        self.containerd_with(&self.dir.path().join(name), env)
    }

    fn pull(&self, containerd: &Containerd, image: &str) -> std::process::Output {
        self.pull_all(containerd, &[image.to_owned()])
    }

    fn pull_all(&self, containerd: &Containerd, images: &[String]) -> std::process::Output {
        output(Command::new(&self.cri_pull).args(["--socket", &containerd.endpoint(), "--timeout", "30"]).args(images))
    }
}

#[test]
fn containerd_pulls_through_the_intercepting_proxy_with_its_ca_in_the_daemons_trust_store() {
    let world = World::new();
    let bundle = world.bundle.display().to_string();
    let containerd = world.containerd("containerd", &[("HTTPS_PROXY", &world.proxy), ("SSL_CERT_FILE", &bundle)]);

    let out = world.pull(&containerd, PAUSE);

    let why = || format!("{}{}\n{}", text(&out.stdout), text(&out.stderr), containerd.log());
    assert!(out.status.success(), "{}", why());
    assert!(text(&out.stdout).starts_with(&format!("pulled {PAUSE} sha256:")), "{}", why());
    assert!(world.proxied().contains(&"CONNECT registry.k8s.io:443".to_owned()), "{:?}", world.proxied());
    assert!(
        world.registry.served_manifest("pause", &world.pause_digest),
        "{:?}\n{}",
        world.registry.fetched("pause"),
        why()
    );
}

#[test]
fn containerd_started_without_the_proxy_fails_the_pull_and_nothing_leaves_its_namespace() {
    let world = World::new();
    let bundle = world.bundle.display().to_string();
    let containerd = world.containerd("containerd", &[("SSL_CERT_FILE", &bundle)]);

    let out = world.pull(&containerd, PAUSE);

    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{err}", text(&out.stdout));
    // containerd looked the registry up itself, at the namespace's own
    // loopback: it never had an address to send anything to.
    assert!(err.contains(&format!("pulling {PAUSE}: UNKNOWN:")), "{err}");
    assert!(err.contains("lookup registry.k8s.io on 127.0.0.1:53"), "{err}");
    assert!(world.proxied().is_empty(), "{:?}", world.proxied());
    assert!(world.registry.fetched("pause").is_empty(), "{:?}", world.registry.fetched("pause"));
}

#[test]
fn containerd_that_does_not_trust_the_proxy_ca_fails_the_pull_on_the_certificate() {
    let world = World::new();
    let containerd = world.containerd("containerd", &[("HTTPS_PROXY", &world.proxy)]);

    let out = world.pull(&containerd, PAUSE);

    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{err}", text(&out.stdout));
    assert!(err.contains("x509: certificate signed by unknown authority"), "{err}");
    assert!(world.proxied().contains(&"CONNECT registry.k8s.io:443".to_owned()), "{:?}", world.proxied());
    assert!(world.registry.fetched("pause").is_empty(), "{:?}", world.registry.fetched("pause"));
}

#[test]
fn an_image_on_a_host_the_proxy_has_no_route_for_fails_with_the_proxys_503() {
    let world = World::new();
    let bundle = world.bundle.display().to_string();
    let containerd = world.containerd("containerd", &[("HTTPS_PROXY", &world.proxy), ("SSL_CERT_FILE", &bundle)]);

    let out = world.pull(&containerd, KUBE_VIP);

    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{err}", text(&out.stdout));
    assert!(err.contains("Service Unavailable"), "{err}");
    assert!(world.proxied().contains(&"CONNECT ghcr.io:443".to_owned()), "{:?}", world.proxied());
    assert!(world.registry.fetched("kube-vip/kube-vip").is_empty(), "{:?}", world.registry.requests());
}

#[test]
fn every_image_kubeadm_v1_31_and_kube_vip_pull_comes_from_the_one_registry_behind_both_hosts() {
    let world = World::routing(&["registry.k8s.io", "ghcr.io"]);
    let mut images = kubernetes_images("v1.31.4", "registry.k8s.io");
    images.push(KUBE_VIP.to_owned());
    let digests = world.registry.push_all(&images, 64 * 1024);
    let bundle = world.bundle.display().to_string();
    let containerd = world.containerd("containerd", &[("HTTPS_PROXY", &world.proxy), ("SSL_CERT_FILE", &bundle)]);

    let out = world.pull_all(&containerd, &images);

    let pulled = text(&out.stdout);
    assert!(out.status.success(), "{pulled}{}\n{}", text(&out.stderr), containerd.log());
    for (image, digest) in images.iter().zip(&digests) {
        assert!(pulled.contains(&format!("pulled {image} sha256:")), "{image}: {pulled}");
        let (name, _) = split_reference(image);
        assert!(world.registry.served_manifest(&name, digest), "{image}: {:?}", world.registry.fetched(&name));
    }
    let proxied = world.proxied();
    assert!(proxied.contains(&"CONNECT ghcr.io:443".to_owned()), "{proxied:?}");
}

/// node-init's own pre-pull, on a control-plane join: the node's root has
/// this containerd at its socket, so the kubernetes stage asks it, through
/// the CRI, for what kubeadm lists and kube-vip's image, before kubeadm.
struct Joining {
    node: Node,
    _api: node_init_tests::kube::ApiServer,
    _bg: Background,
}

/// The joining node, and the world's containerd serving on the node's own
/// socket path (`--root` resolves a link inside the root, as a chroot does).
fn joining(world: &World) -> (Joining, Containerd) {
    let s = Secrets::new();
    let bg = Background::new();
    let api = api_server(&bg, "127.0.0.1:0".parse().unwrap(), &s.cluster_ca(), &s.get("token"), Serve::Good);
    let cluster = format!("kubernetes:\n  endpoint: {}\n  version: v1.31.4\n  vip: {{interface: eth0}}\n", api.addr);
    let node = Node::new(&userdata("control-plane", &cluster, &s), 0);
    let containerd = world.behind.containerd(&node.path("run/containerd"));
    (Joining { node, _api: api, _bg: bg }, containerd)
}

/// A child killed if the test ends before it does.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `status` (as a table, and as JSON) of the live `run` on `node`, as soon
/// as both show `wanted` in the work ahead's progress; within a minute, and
/// before the run ends.
fn watch_status(node: &Node, run: &mut std::process::Child, wanted: &str) -> (String, serde_json::Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let table = text(&node_init_tests::node_init(&["status", "--root", &node.arg()]).stdout);
        if table.contains(wanted) {
            let json = status_json(node);
            // The same moment, unless the work moved on in between.
            if json["ahead"]["work"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|w| w["progress"].as_str().is_some_and(|p| p.contains(wanted)))
            {
                return (table, json);
            }
        }
        if let Some(end) = run.try_wait().unwrap() {
            panic!("the run ended ({end}) before status showed {wanted:?}; last status:\n{table}");
        }
        assert!(std::time::Instant::now() < deadline, "status never showed {wanted:?}:\n{table}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `node-init status --output json` of `node`.
fn status_json(node: &Node) -> serde_json::Value {
    let status = node_init_tests::node_init(&["status", "--root", &node.arg(), "--output", "json"]);
    serde_json::from_slice(&status.stdout).unwrap()
}

fn kubernetes_record(node: &Node) -> serde_json::Value {
    status_json(node)["stages"].as_array().unwrap().iter().find(|s| s["name"] == "kubernetes").unwrap().clone()
}

#[test]
fn node_init_pulls_only_what_containerd_lacks_through_the_cri_before_kubeadm_joins() {
    let world = World::routing(&["registry.k8s.io", "ghcr.io"]);
    let mut images = kubernetes_images("v1.31.4", "registry.k8s.io");
    images.push(KUBE_VIP.to_owned());
    let digests = world.registry.push_all(&images, 64 * 1024);
    let (j, containerd) = joining(&world);
    // The sandbox image is there already (an earlier boot pulled it).
    assert!(world.pull(&containerd, PAUSE).status.success());
    let pause_fetches = world.registry.fetched("pause").len();

    let out = j.node.run();

    let why = || format!("{}\n{}", text(&out.stderr), containerd.log());
    assert_eq!(out.status.code(), Some(0), "{}", why());
    // kubeadm was asked for its list, then joined: the pulls came between.
    assert_eq!(
        j.node.calls(),
        [
            "config images list --kubernetes-version v1.31.4 --image-repository registry.k8s.io",
            "join --config /etc/node-init/kubeadm.yaml"
        ],
        "{}",
        why()
    );
    let rec = kubernetes_record(&j.node);
    assert_eq!(rec["status"], "done", "{rec}");
    let got = &rec["details"]["images"];
    assert_eq!(got["present"], serde_json::json!([PAUSE]), "{rec}");
    let pulled: Vec<String> = images.iter().filter(|i| *i != PAUSE).cloned().collect();
    assert_eq!(got["pulled"], serde_json::json!(pulled), "{rec}");
    // containerd fetched every other image from the registry, through the
    // proxy, and never asked for the one it had: ImageStatus came first.
    for (image, digest) in images.iter().zip(&digests).filter(|(i, _)| *i != PAUSE) {
        let (name, _) = split_reference(image);
        assert!(world.registry.served_manifest(&name, digest), "{image}: {:?}", world.registry.fetched(&name));
    }
    assert_eq!(world.registry.fetched("pause").len(), pause_fetches, "{:?}", world.registry.fetched("pause"));
    assert!(world.proxied().contains(&"CONNECT ghcr.io:443".to_owned()), "{:?}", world.proxied());
}

#[test]
fn an_image_the_registry_lacks_fails_the_kubernetes_stage_naming_it_and_kubeadm_never_joins() {
    let world = World::new();
    let images = kubernetes_images("v1.31.4", "registry.k8s.io");
    let etcd = images.iter().find(|i| i.contains("/etcd:")).unwrap().clone();
    let others: Vec<String> = images.iter().filter(|i| **i != etcd && !i.ends_with("/pause:3.10")).cloned().collect();
    world.registry.push_all(&others, 4096);
    let (j, _containerd) = joining(&world);

    // The run's log goes to a file: a pipe nobody reads until the end
    // would stop the run once full.
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = node_init_tests::node_init_command(&["run", "--root", &j.node.arg()])
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut run = Reaped(child);
    // While the two failing images are tried again (2 s, then 4 s apart),
    // `status` shows the pulls beside the kubernetes stage's wait for them.
    let (table, json) = watch_status(&j.node, &mut run.0, "6/8 in containerd; pulling ");
    let code = run.0.wait().unwrap().code();
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(table.contains(&format!("ahead of its turn (run pid {}):\n", json["ahead"]["pid"])), "{table}");
    let images = json["ahead"]["work"].as_array().unwrap().iter().find(|w| w["name"] == "images").unwrap();
    assert_eq!(images["state"], "running", "{json}");
    let since = images["since"].as_str().unwrap();
    assert!(table.contains(&format!("  images     {since}  running: 6/8 in containerd; pulling ")), "{table}");
    // Under --root the node has no addresses: the DNS wait was never needed.
    assert!(table.lines().any(|l| l.starts_with("  dns        ") && l.ends_with("  not needed")), "{table}");
    // The six present; the two failing ones (or the one still being tried
    // once the other has given up) are being pulled.
    let progress = images["progress"].as_str().unwrap_or_default();
    let pulling = progress.strip_prefix("6/8 in containerd; pulling ").unwrap_or_else(|| panic!("{json}"));
    let short = |i: &str| i.rsplit('/').next().unwrap().to_owned();
    let failing = [short(&etcd), short(KUBE_VIP)];
    assert!(pulling.split(", ").all(|p| failing.contains(&p.to_owned())), "{json}");
    // The run is over: nothing is shown ahead, and nothing is left on /run.
    let after = status_json(&j.node);
    assert!(after.get("ahead").is_none(), "{after}");
    assert!(!j.node.path("run/node-init").exists());

    assert_eq!(code, Some(1), "{stderr}");
    let rec = kubernetes_record(&j.node);
    let err = rec["last_error"].as_str().unwrap_or_default().to_owned();
    // kube-vip's host has no route at the proxy; etcd is not in the registry.
    assert!(err.starts_with("containerd could not pull 2 of 8 images: "), "{err}");
    assert!(err.contains(&format!("{etcd}: after 3 tries: PullImage on ")), "{err}");
    assert!(err.contains("not found"), "{err}");
    assert!(err.contains(&format!("{KUBE_VIP}: after 3 tries")), "{err}");
    assert!(!j.node.calls().iter().any(|c| c.starts_with("join")), "{:?}", j.node.calls());
}
