//! The VM tier's world: everything a MAAS-deployed node meets at its first
//! boot, made on this host. A namespace holds a bridge joining the guest's
//! tap to a veth whose host side carries bind9 (the `maas` zone and the
//! guest's reverse zone), a TLS-intercepting proxy whose CA goes in the
//! user data, in front of an apt repository holding an upgrade whose
//! postinst asks for a reboot, and the kube-apiserver stand-in at the VIP.
//! The guest's disk is the built image plus what MAAS and the machine add:
//! a NoCloud seed with MAAS's meta-data (`local-hostname` is the FQDN), an
//! apt source, version 1 of the package, the kubeadm double, and a unit
//! that reports on the console and powers off once the first boot is done.
//!
//! The guest's only network is that tap: QEMU's `restrict=on` user
//! networking drops the guest's UDP, so it could not carry the DNS queries
//! the dns stage makes to bind9.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::bind9::Named;
use crate::cluster::Secrets;
use crate::kube::{ApiServer, ClusterCa, Serve, api_server};
use crate::net::{Background, Netns, file_server, intercepting_proxy};
use crate::vm::{Boot, MAC, make_disk, unpacked};
use crate::{apt, kubeadm, yaml_block};

/// The apt repository's name, which only the proxy resolves.
pub const REPO: &str = "repo.node-init.test";

/// Who does the first boot's jobs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    NodeInit,
    /// cloud-init's own modules, as a user would write them without
    /// node-init: `ca_certs`, `apt: proxy`, `package_upgrade` with
    /// `package_reboot_if_required`, `runcmd` calling kubeadm.
    CloudInit,
}

/// The stand-ins, running until dropped, and what a test asserts with.
pub struct World {
    pub bg: Background,
    pub ns: Netns,
    pub work: tempfile::TempDir,
    pub guest: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub secrets: Secrets,
    pub cluster_ca: ClusterCa,
    pub proxy_ca: ClusterCa,
    pub named: Named,
    /// "METHOD PATH" the repository served.
    pub repo_log: Arc<Mutex<Vec<String>>>,
    /// "CONNECT host:port" per tunnel the proxy opened.
    pub proxy_log: Arc<Mutex<Vec<String>>>,
}

impl World {
    pub fn new() -> Self {
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
        apt::flat_repo(&repo, &apt::deb(work.path(), "2"));
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
        let cluster_ca = secrets.cluster_ca();
        Self { bg, ns, work, guest, vip, secrets, cluster_ca, proxy_ca, named, repo_log, proxy_log }
    }

    /// The kube-apiserver stand-in at the VIP, serving cluster-info for
    /// the minted CA and token.
    pub fn api_server(&self) -> ApiServer {
        api_server(
            &self.bg,
            format!("{}:6443", self.vip).parse().unwrap(),
            &self.cluster_ca,
            &self.secrets.get("token"),
            Serve::Good,
        )
    }

    /// The cluster's shared config: the proxy with its CA, patching, the
    /// `maas` domain on bind9, the VIP.
    pub fn cluster_yaml(&self, patch: bool) -> String {
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
    pub fn disk(&self, name: &str, user_data: &str, tool: Tool) -> (PathBuf, tempfile::TempDir) {
        let tree = unpacked();
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
        kubeadm::install(t);
        let (after, done, report) = match tool {
            Tool::NodeInit => (
                "node-init.service",
                "/var/lib/node-init/done",
                "echo e2e-report: bootstrap-success $(ls /run/cluster-api); \
                 /usr/local/sbin/node-init status --output json > /var/lib/node-init-e2e-status.json; \
                 echo e2e-report: status $?; \
                 echo e2e-report: ip_forward $(cat /proc/sys/net/ipv4/ip_forward); \
                 echo e2e-report: modules $(ls -d /sys/module/br_netfilter /sys/module/overlay); \
                 echo e2e-report: swaps $(tail -n +2 /proc/swaps | wc -l); \
                 echo e2e-report: containerd $(systemctl is-active containerd) \
                 $(tr \"[:cntrl:]\" \" \" < /proc/$(pidof containerd)/environ | grep -c HTTPS_PROXY=)",
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
        apt::install(t, &apt::deb(self.work.path(), "1"));
        let disk = self.work.path().join(format!("{name}.img"));
        make_disk(t, &disk);
        (disk, tree)
    }

    /// Boots the disk on this world's network until the guest powers off,
    /// or `stop` says so.
    pub fn boot(&self, name: &str, disk: PathBuf, tree: &Path, stop: impl Fn(&str) -> bool) -> Boot {
        crate::vm::boot(&self.ns, self.work.path(), name, disk, tree, stop)
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

fn write(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}
