//! The whole first boot, for real: the image `node-image build` made,
//! written to a disk and booted under QEMU with its own kernel, initrd,
//! systemd and cloud-init. The user data comes from `node-init userdata`
//! through a NoCloud seed with MAAS's meta-data. node-init, started by its
//! own unit, meets the world `src/first_boot.rs` makes: bind9 serving the
//! `maas` zone and its reverse zone, a TLS-intercepting proxy whose CA is
//! the one in the user data in front of an apt repository holding an
//! upgrade whose postinst asks for a reboot, and the kube-apiserver
//! stand-in at the VIP, its CA pinned in the user data. The tests read the
//! serial console and, after the guest powers off, the disk (debugfs).

use std::collections::BTreeMap;
use std::time::Duration;

use node_init_tests::apt::PKG;
use node_init_tests::bind9::in_addr_arpa;
use node_init_tests::cluster::userdata;
use node_init_tests::first_boot::{REPO, Tool, World};
use node_init_tests::vm::tail;
use node_init_tests::yaml_block;

#[test]
fn first_boot_patches_reboots_trusts_the_proxy_ca_resolves_and_joins() {
    let w = World::new();
    let api = w.api_server();
    let ud = userdata("worker", &w.cluster_yaml(true), &w.secrets);
    let (disk, tree) = w.disk("good", &ud, Tool::NodeInit);
    let boot = w.boot("good", disk, tree.path(), |_| false);
    let serial = &boot.serial;

    // Patched through the intercepting proxy, which apt trusted only
    // because node-init installed its CA; then exactly one reboot.
    let pkg = boot.package(PKG);
    assert!(pkg.contains("Version: 2\n"), "{PKG} was not upgraded:\n{pkg}\n{}", tail(serial));
    assert!(w.proxy_log.lock().unwrap().iter().any(|c| c == &format!("CONNECT {REPO}:443")));
    assert!(w.repo_log.lock().unwrap().iter().any(|r| r.contains(&format!("{PKG}_2_all.deb"))));
    assert_eq!(boot.boots(), 2, "expected exactly one reboot:\n{}", tail(serial));
    let bundle = boot.file("/etc/ssl/certs/ca-certificates.crt");
    let body: String = w.proxy_ca.cert_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(bundle.lines().collect::<String>().contains(&body), "the proxy CA is not in the guest's bundle");

    // The dns stage asked bind9 from the guest's address.
    let queries = w.named.queries();
    let from_guest = |q: &str| queries.lines().any(|l| l.contains(&format!(" {}#", w.guest)) && l.contains(q));
    assert!(from_guest("query: node1.maas IN A"), "no A query from the guest:\n{queries}");
    assert!(from_guest(&format!("query: {} IN PTR", in_addr_arpa(w.guest))), "no PTR query:\n{queries}");

    // The join: discovery against the VIP, then the recording kubeadm.
    assert!(api.requests() >= 2, "cluster-info was read {} time(s)", api.requests());
    assert_eq!(boot.file("/var/log/kubeadm/argv").trim(), "join --config /etc/node-init/kubeadm.yaml");
    let config = boot.file("/var/log/kubeadm/config.1");
    assert!(config.starts_with("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n"), "{config}");
    assert!(config.contains(&format!("apiServerEndpoint: {}:6443", w.vip)), "{config}");
    assert!(config.contains(&format!("- {}", w.secrets.get("ca-cert-hash"))), "{config}");
    assert!(config.contains("name: \"node1.maas\""), "{config}");
    assert!(serial.contains("fake-kubeadm: join --config /etc/node-init/kubeadm.yaml"), "{}", tail(serial));

    // Done, and node-init's own account of it, taken in the guest.
    assert!(serial.contains("e2e-report: bootstrap-success bootstrap-success.complete"), "{}", tail(serial));
    assert!(serial.contains("e2e-report: done"), "{}", tail(serial));
    assert!(serial.contains("e2e-report: status 0"), "{}", tail(serial));
    // The host stage's work, after the patch's reboot: persisted, and
    // containerd (started at boot, before node-init) runs with the proxy.
    for want in [
        "e2e-report: ip_forward 1",
        "e2e-report: modules /sys/module/br_netfilter /sys/module/overlay",
        "e2e-report: swaps 0",
        "e2e-report: containerd active 1",
    ] {
        assert!(serial.contains(want), "{want}:\n{}", tail(serial));
    }
    let json: serde_json::Value =
        serde_json::from_str(&boot.file("/var/lib/node-init-e2e-status.json")).expect("status --output json");
    assert_eq!(json["done"], true, "{json}");
    let reboots = json["reboots"].as_array().expect("reboots");
    assert_eq!(reboots.len(), 1, "{json}");
    assert_eq!(reboots[0]["stage"], "patch");
    assert!(reboots[0]["reason"].as_str().unwrap().contains(&format!("reboot-required exists (for {PKG})")), "{json}");
    let stages: Vec<(&str, &str)> = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [("proxy", "done"), ("patch", "done"), ("host", "done"), ("dns", "done"), ("kubernetes", "done")],
        "{json}"
    );
    drop(tree);
}

#[test]
fn a_wrong_ca_hash_fails_the_unit_visibly_and_kubeadm_is_never_called() {
    let w = World::new();
    let api = w.api_server();
    let good = userdata("worker", &w.cluster_yaml(false), &w.secrets);
    let wrong = format!("sha256:{}", "e".repeat(64));
    let ud = good.replace(&w.secrets.get("ca-cert-hash"), &wrong);
    assert_ne!(ud, good, "the pin is not in the user data as text");
    let (disk, tree) = w.disk("wrong-hash", &ud, Tool::NodeInit);
    // The unit fails, and systemd says so on the console (then restarts it
    // 30 s later, which the test does not wait for).
    let boot = w.boot("wrong-hash", disk, tree.path(), |log| log.contains("Failed to start node-init.service"));
    let serial = &boot.serial;
    assert!(serial.contains("refusing to join") && serial.contains(&wrong), "{}", tail(serial));
    assert!(
        serial.contains("node-init.service: Main process exited, code=exited, status=1/FAILURE"),
        "{}",
        tail(serial)
    );
    assert!(!serial.contains("fake-kubeadm:"), "kubeadm was called:\n{}", tail(serial));
    assert!(!serial.contains("e2e-report:"), "the node was reported done:\n{}", tail(serial));
    assert!(api.requests() >= 1, "node-init never read cluster-info");
    assert_eq!(boot.boots(), 1);
    drop(tree);
}

/// node-init's first boot and cloud-init's own modules doing the same jobs,
/// on the same image and the same stand-ins, one after the other; prints
/// both timelines. Only the outcomes are asserted: the times are
/// measurements, reported in the README, not pass marks.
#[test]
fn side_by_side_with_cloud_init_doing_the_same_jobs() {
    let w = World::new();
    let api = w.api_server();
    let ud = userdata("worker", &w.cluster_yaml(true), &w.secrets);
    let (disk, tree) = w.disk("ours", &ud, Tool::NodeInit);
    let ours = w.boot("ours", disk, tree.path(), |_| false);
    drop(tree);
    assert!(ours.serial.contains("e2e-report: status 0"), "{}", tail(&ours.serial));

    let host = w.ns.host_ip;
    let theirs_ud = format!(
        "#cloud-config\nca_certs:\n  trusted:\n  - |\n{}apt:\n  preserve_sources_list: true\n  \
         proxy: http://{host}:3128\n  https_proxy: http://{host}:3128\n\
         package_update: true\npackage_upgrade: true\npackage_reboot_if_required: true\n\
         runcmd:\n- [kubeadm, join, \"{}:6443\", --token, \"{}\", --discovery-token-ca-cert-hash, \"{}\"]\n\
         - [touch, /var/lib/e2e-cloud-init-done]\n",
        yaml_block(&w.proxy_ca.cert_pem, 4),
        w.vip,
        w.secrets.get("token"),
        w.secrets.get("ca-cert-hash")
    );
    let (disk, tree) = w.disk("theirs", &theirs_ud, Tool::CloudInit);
    let theirs = w.boot("theirs", disk, tree.path(), |_| false);
    drop(tree);

    // The same outcome: upgraded, one reboot, CA trusted, kubeadm called.
    for (who, boot) in [("node-init", &ours), ("cloud-init", &theirs)] {
        assert!(boot.package(PKG).contains("Version: 2\n"), "{who}: not upgraded:\n{}", tail(&boot.serial));
        assert_eq!(boot.boots(), 2, "{who}: not exactly one reboot:\n{}", tail(&boot.serial));
        assert!(boot.serial.contains("fake-kubeadm: join"), "{who}: kubeadm not called:\n{}", tail(&boot.serial));
        assert!(boot.to_done.is_some(), "{who}: never reported done");
    }
    assert!(api.requests() >= 2, "node-init's discovery did not run");

    // The timelines.
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    let total = |cpu: &BTreeMap<String, f64>, units: &[&str]| -> f64 {
        units.iter().map(|u| cpu.get(*u).copied().unwrap_or(0.0)).sum()
    };
    let cloud_units = ["cloud-init-local.service", "cloud-init.service", "cloud-config.service", "cloud-final.service"];
    let (ours_cpu, theirs_cpu) = (ours.cpu(), theirs.cpu());
    let mut report = String::from("\nfirst boot, side by side (QEMU TCG, 2 vCPUs, same image and stand-ins)\n");
    report += &format!(
        "  boot to done (host clock, +/-2 s):   node-init {:.0} s   cloud-init modules {:.0} s   ratio {:.2}\n",
        secs(ours.to_done),
        secs(theirs.to_done),
        secs(theirs.to_done) / secs(ours.to_done)
    );
    report += &format!(
        "  CPU time of the tool's units, both boots:   node-init {:.2} s (node-init.service)   \
         cloud-init {:.2} s (with node-init installed, cloud-init also ran: {:.2} s)\n",
        total(&ours_cpu, &["node-init.service"]),
        total(&theirs_cpu, &cloud_units),
        total(&ours_cpu, &cloud_units)
    );
    let json: serde_json::Value =
        serde_json::from_str(&ours.file("/var/lib/node-init-e2e-status.json")).expect("status --output json");
    report += "  node-init stages (state.json):\n";
    for st in json["stages"].as_array().unwrap() {
        report += &format!(
            "    {:<12} {:>7.2} s\n",
            st["name"].as_str().unwrap(),
            st["duration_ms"].as_f64().unwrap_or(0.0) / 1e3
        );
    }
    report += "  cloud-init analyze blame (top 8):\n";
    for l in theirs.tagged("e2e-blame: ").iter().filter(|l| l.contains("s (")).take(8) {
        report += &format!("    {l}\n");
    }
    for (who, boot) in [("node-init", &ours), ("cloud-init", &theirs)] {
        for l in boot.tagged("Startup finished in ") {
            report += &format!("  systemd, {who}: startup finished in {l}\n");
        }
    }
    eprintln!("{report}");
    assert!(total(&ours_cpu, &["node-init.service"]) > 0.0, "no CPU accounting for node-init.service: {ours_cpu:?}");
}
