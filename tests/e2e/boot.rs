//! The whole first boot, for real: the image `node-image build` made,
//! written to a disk with `mkfs.ext4 -d`, booted under QEMU (TCG, `-cpu
//! max`) with the image's own kernel, initrd, systemd and cloud-init. The
//! user data comes from `node-init userdata` through a NoCloud seed with
//! MAAS's meta-data (`local-hostname` is the FQDN). node-init, started by
//! its own unit, meets:
//! - bind9 serving the `maas` zone and its reverse zone,
//! - a TLS-intercepting proxy whose CA is the one in the user data, in
//!   front of an apt repository holding an upgrade whose postinst asks
//!   for a reboot,
//! - the kube-apiserver stand-in at the VIP, serving cluster-info signed
//!   for the token, its CA pinned in the user data.
//!
//! The guest's only network is a tap on a bridge inside a namespace the
//! test made, joined by a veth to the stand-ins on the host side. (QEMU's
//! `restrict=on` user networking drops the guest's UDP, so it could not
//! carry the DNS queries the dns stage makes to bind9.) The test reads the
//! serial console and, after the guest powers off, the disk (debugfs).

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node_init_tests::kube::{ApiServer, ClusterCa, Serve, api_server};
use node_init_tests::net::{Background, Netns, file_server, intercepting_proxy};
use node_init_tests::{text, yaml_block};

use crate::kubernetes::{FAKE_KUBEADM, Secrets, userdata};
use crate::patch::{PKG, deb, flat_repo, run as sh};

const MAC: &str = "52:54:00:12:34:56";

/// Who does the first boot's jobs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    NodeInit,
    /// cloud-init's own modules, as a user would write them without
    /// node-init: `ca_certs`, `apt: proxy`, `package_upgrade` with
    /// `package_reboot_if_required`, `runcmd` calling kubeadm.
    CloudInit,
}
const REPO: &str = "repo.node-init.test";
/// One boot scenario's bound, well inside the tier's 20 minutes.
const DEADLINE: Duration = Duration::from_secs(12 * 60);

fn write(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// bind9 (`named -g`) serving `maas` and the guest's reverse zone on the
/// host side of the link; its query log goes to a file.
struct Named {
    child: Child,
    log: PathBuf,
}

impl Named {
    fn start(dir: &Path, listen: Ipv4Addr, guest: Ipv4Addr) -> Self {
        let d = dir.join("named");
        std::fs::create_dir_all(&d).unwrap();
        let [a, b, c, last] = guest.octets();
        let soa = "$TTL 30\n@ IN SOA ns1.maas. root.maas. 1 30 30 300 30\n@ IN NS ns1.maas.\n";
        std::fs::write(d.join("maas.zone"), format!("{soa}ns1 IN A {listen}\nnode1 IN A {guest}\n")).unwrap();
        std::fs::write(d.join("rev.zone"), format!("{soa}{last} IN PTR node1.maas.\n")).unwrap();
        let conf = format!(
            "options {{\n  directory \"{d}\";\n  listen-on port 53 {{ {listen}; }};\n  listen-on-v6 {{ none; }};\n  \
             recursion no;\n  dnssec-validation no;\n  querylog yes;\n  pid-file \"{d}/named.pid\";\n  \
             session-keyfile \"{d}/session.key\";\n}};\n\
             zone \"maas\" {{ type primary; file \"{d}/maas.zone\"; }};\n\
             zone \"{c}.{b}.{a}.in-addr.arpa\" {{ type primary; file \"{d}/rev.zone\"; }};\n",
            d = d.display()
        );
        std::fs::write(d.join("named.conf"), conf).unwrap();
        let log = d.join("named.log");
        let child = Command::new("named")
            .args(["-g", "-c"])
            .arg(d.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("named (apt-get install bind9)");
        let started = Instant::now();
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("running") {
            assert!(started.elapsed() < Duration::from_secs(20), "named did not start: {}", Self::read(&log));
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, log }
    }

    fn read(log: &Path) -> String {
        std::fs::read_to_string(log).unwrap_or_default()
    }

    fn queries(&self) -> String {
        Self::read(&self.log).lines().filter(|l| l.contains("query:")).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the guest's disk and console said once it stopped.
struct Boot {
    disk: PathBuf,
    serial: String,
    /// From QEMU's start to the guest's "e2e-report: done" (to 2 s).
    to_done: Option<Duration>,
}

impl Boot {
    /// CPU seconds per unit, summed over the boots: systemd's own
    /// accounting, which it logs as "UNIT: Consumed 1min 2.345s CPU time."
    /// when a unit stops (at the reboot and the power-off too).
    fn cpu(&self) -> std::collections::BTreeMap<String, f64> {
        let mut cpu = std::collections::BTreeMap::new();
        for l in self.serial.lines() {
            let Some((head, rest)) = l.split_once(": Consumed ") else { continue };
            let Some(spent) = rest.strip_suffix(" CPU time.") else { continue };
            let Some(unit) = head.rsplit(' ').next() else { continue };
            let mut secs = 0.0;
            for part in spent.split_whitespace() {
                if let Some(m) = part.strip_suffix("min") {
                    secs += m.parse::<f64>().unwrap_or(0.0) * 60.0;
                } else if let Some(ms) = part.strip_suffix("ms") {
                    secs += ms.parse::<f64>().unwrap_or(0.0) / 1e3;
                } else if let Some(v) = part.strip_suffix('s') {
                    secs += v.parse::<f64>().unwrap_or(0.0);
                }
            }
            *cpu.entry(unit.to_owned()).or_default() += secs;
        }
        cpu
    }

    /// Lines the report unit tagged with `tag`.
    fn tagged(&self, tag: &str) -> Vec<String> {
        self.serial.lines().filter_map(|l| l.split(tag).nth(1)).map(|l| l.trim().to_owned()).collect()
    }

    /// A file from the guest's disk, read with debugfs.
    fn file(&self, path: &str) -> String {
        let out = Command::new("debugfs").args(["-R", &format!("cat {path}")]).arg(&self.disk).output().unwrap();
        text(&out.stdout)
    }

    /// The package's stanza in the guest's dpkg status ("" when absent).
    fn package(&self, name: &str) -> String {
        let status = self.file("/var/lib/dpkg/status");
        status.split("\n\n").find(|p| p.starts_with(&format!("Package: {name}\n"))).unwrap_or_default().to_owned()
    }

    fn boots(&self) -> usize {
        self.serial.matches("Linux version ").count()
    }
}

struct World {
    bg: Background,
    ns: Netns,
    work: tempfile::TempDir,
    guest: Ipv4Addr,
    vip: Ipv4Addr,
    secrets: Secrets,
    cluster_ca: ClusterCa,
    proxy_ca: ClusterCa,
    named: Named,
    repo_log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    proxy_log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl World {
    fn new() -> Self {
        let ns = Netns::new();
        let [a, b, c, _] = ns.host_ip.octets();
        let (guest, vip) = (Ipv4Addr::new(a, b, c, 10), Ipv4Addr::new(a, b, c, 100));
        // The guest's tap and the namespace's end of the veth on one bridge.
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "flush", "dev", &ns.node_if]);
        ns.ip(&["link", "set", &ns.node_if, "master", "br0"]);
        ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ns.ip(&["link", "set", "tap0", "master", "br0"]);
        ns.ip(&["link", "set", "tap0", "up"]);
        ns.ip(&["link", "set", "br0", "up"]);
        ns.host_address(vip);

        let work = tempfile::tempdir_in(crate::vm::image().parent().unwrap()).unwrap();
        let bg = Background::new();
        let named = Named::start(work.path(), ns.host_ip, guest);

        // The apt repository: version 2 of the test package, reachable
        // only through the proxy.
        let repo = work.path().join("repo");
        flat_repo(&repo, &deb(work.path(), "2"));
        let (repo_addr, repo_log) = file_server(&bg, repo);
        let proxy_ca = ClusterCa::named("node-init e2e intercepting proxy CA");
        let (_, proxy_log) = intercepting_proxy(
            &bg,
            std::net::SocketAddr::new(ns.host_ip.into(), 3128),
            &proxy_ca.cert_pem,
            &proxy_ca.key_pem,
            repo_addr,
        );
        let secrets = Secrets::new();
        let cluster_ca =
            ClusterCa::from_pem(&secrets.get("ca.crt"), &std::fs::read_to_string(secrets.dir.join("ca.key")).unwrap());
        Self { bg, ns, work, guest, vip, secrets, cluster_ca, proxy_ca, named, repo_log, proxy_log }
    }

    /// The kube-apiserver stand-in at the VIP, serving cluster-info for
    /// the minted CA and token.
    fn api_server(&self) -> ApiServer {
        api_server(
            &self.bg,
            format!("{}:6443", self.vip).parse().unwrap(),
            &self.cluster_ca,
            &self.secrets.get("token"),
            Serve::Good,
        )
    }

    fn cluster_yaml(&self, patch: bool) -> String {
        let host = self.ns.host_ip;
        format!(
            "proxy:\n  http: http://{host}:3128\n  https: http://{host}:3128\n  ca_cert: |\n{}\
             os: {{patch: {patch}, reboot: if-required}}\n\
             dns: {{domain: maas, nameservers: [{host}], timeout: 3m}}\n\
             kubernetes:\n  endpoint: {}:6443\n  version: v1.31.4\n  discovery_timeout: 2m\n",
            yaml_block(&self.proxy_ca.cert_pem, 4),
            self.vip
        )
    }

    /// The image unpacked, the machine's own state added (user data seed,
    /// apt source, version 1 of the package, the recording kubeadm, a unit
    /// that reports and powers off once the tool is done), then a disk.
    fn disk(&self, name: &str, user_data: &str, tool: Tool) -> (PathBuf, tempfile::TempDir) {
        let tree = crate::vm::unpacked();
        let t = tree.path();
        write(t, "var/lib/cloud/seed/nocloud/meta-data", "instance-id: node1-e2e\nlocal-hostname: node1.maas\n", 0o644);
        write(t, "var/lib/cloud/seed/nocloud/user-data", user_data, 0o600);
        write(
            t,
            "var/lib/cloud/seed/nocloud/network-config",
            &format!(
                "version: 2\nethernets:\n  eth0:\n    match: {{macaddress: \"{MAC}\"}}\n    set-name: eth0\n    \
                 addresses: [{}/24]\n",
                self.guest
            ),
            0o644,
        );
        write(t, "etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n", 0o644);
        write(t, "etc/apt/sources.list", &format!("deb [trusted=yes] https://{REPO}/ ./\n"), 0o644);
        write(t, "usr/local/bin/kubeadm", FAKE_KUBEADM, 0o755);
        let (after, done, report) = match tool {
            Tool::NodeInit => (
                "node-init.service",
                "/var/lib/node-init/done",
                "echo e2e-report: bootstrap-success $(ls /run/cluster-api); \
                 /usr/local/sbin/node-init status --output json > /var/lib/node-init-e2e-status.json; \
                 echo e2e-report: status $?",
            ),
            Tool::CloudInit => {
                // node-init stands aside: its unit runs only without this.
                write(t, "var/lib/node-init/done", "", 0o644);
                (
                    "cloud-final.service",
                    "/var/lib/e2e-cloud-init-done",
                    // Inside the unit's single-quoted `sh -c`.
                    "cloud-init analyze blame | sed \"s/^/e2e-blame: /\"",
                )
            }
        };
        write(
            t,
            "etc/systemd/system/e2e-report.service",
            &format!(
                "[Unit]\nDescription=e2e: report, then power off, once the first boot is done\n\
                 After={after}\nConditionPathExists={done}\n\n\
                 [Service]\nType=oneshot\nStandardOutput=tty\nTTYPath=/dev/ttyS0\n\
                 ExecStart=/bin/sh -c '{report}; echo e2e-report: done; \
                 sync; systemctl --no-block poweroff'\n\n[Install]\nWantedBy=cloud-init.target\n"
            ),
            0o644,
        );
        // Wanted by cloud-init.target, reached after cloud-final: a unit
        // wanted by multi-user.target is ordered before it, and
        // cloud-final.service after it.
        std::fs::create_dir_all(t.join("etc/systemd/system/cloud-init.target.wants")).unwrap();
        std::os::unix::fs::symlink(
            "../e2e-report.service",
            t.join("etc/systemd/system/cloud-init.target.wants/e2e-report.service"),
        )
        .unwrap();
        let v1 = deb(self.work.path(), "1");
        std::fs::copy(&v1, t.join("tmp/v1.deb")).unwrap();
        sh(Command::new("chroot")
            .arg(t)
            .args(["dpkg", "-i", "/tmp/v1.deb"])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
        std::fs::remove_file(t.join("tmp/v1.deb")).unwrap();
        let disk = self.work.path().join(format!("{name}.img"));
        sh(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "root", "-d"]).arg(t).arg(&disk).arg("3G"));
        (disk, tree)
    }

    /// Boots the disk until the guest powers off, or `stop` says so.
    fn boot(&self, name: &str, disk: PathBuf, tree: &Path, stop: impl Fn(&str) -> bool) -> Boot {
        let find = |prefix: &str| {
            let boot = tree.join("boot");
            let f = std::fs::read_dir(&boot)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix}* in the image's /boot"));
            // The disk holds its own copy; the kernel is read from the tree.
            let copy = self.work.path().join(format!("{name}-{prefix}"));
            std::fs::copy(&f, &copy).unwrap();
            copy
        };
        let (kernel, initrd) = (find("vmlinuz-"), find("initrd.img-"));
        let serial = self.work.path().join(format!("{name}.serial"));
        let mut qemu = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "qemu-system-x86_64"])
            .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048", "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-monitor", "none"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.journald.forward_to_console=1"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC},romfile=")])
            .args(["-device", "virtio-rng-pci"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
        let started = Instant::now();
        let mut to_done = None;
        loop {
            let log = text(&std::fs::read(&serial).unwrap_or_default());
            if to_done.is_none() && log.contains("e2e-report: done") {
                to_done = Some(started.elapsed());
            }
            if let Some(status) = qemu.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(qemu.stderr.as_mut().unwrap(), &mut err).unwrap();
                assert!(status.success(), "qemu: {status}: {err}\n{}", tail(&log));
                break;
            }
            if stop(&log) {
                let _ = qemu.kill();
                let _ = qemu.wait();
                break;
            }
            if started.elapsed() > DEADLINE {
                let _ = qemu.kill();
                let _ = qemu.wait();
                panic!("{name}: the guest did not finish within {DEADLINE:?}:\n{}", tail(&log));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        let serial = text(&std::fs::read(&serial).unwrap());
        eprintln!(
            "{name}: {} boot(s), {:.0} s",
            serial.matches("Linux version ").count(),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        Boot { disk, serial, to_done }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

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
    assert!(from_guest(&format!("query: {}.in-addr.arpa IN PTR", reverse(w.guest))), "no PTR query:\n{queries}");

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
    assert_eq!(stages, [("proxy", "done"), ("patch", "done"), ("dns", "done"), ("kubernetes", "done")], "{json}");
    drop(tree);
}

fn reverse(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}")
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
    let total = |cpu: &std::collections::BTreeMap<String, f64>, units: &[&str]| -> f64 {
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
