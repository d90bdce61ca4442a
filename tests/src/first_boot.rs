//! The VM tier's world: everything a MAAS-deployed node meets at its first
//! boot, made on this host, as hostile as a stock Ubuntu node under MAAS.
//!
//! The network: a namespace holds a bridge joining the guest's tap to a
//! veth whose host side carries bind9 (the zone of the MAAS domain
//! `dc1.example`, not `maas`, and the guest's reverse zone), MAAS's
//! metadata service (the datasource cloud-init reads, OAuth-checked, and
//! the status endpoint node-init reports to), its NTP server, a TLS-intercepting proxy
//! whose CA goes in the user data, and the kube-apiserver stand-in at the
//! VIP. Behind the proxy, and only there: an apt repository holding an
//! upgrade that weighs what a kernel's does (40 MiB, and a postinst that
//! compresses it as update-initramfs does), and Debian's distribution
//! registry serving the images kubeadm and kube-vip pull, by their real
//! names (`registry.k8s.io`, `ghcr.io`) and at their real sizes (193 MiB).
//!
//! The guest's disk is the built image plus what curtin and the machine
//! add: cloud-init's MAAS datasource configured as curtin writes it (no
//! NoCloud seed: cloud-init fetches meta-data and user data over the
//! network, as on a deployed machine), the network config with MAAS's DNS
//! server and search domain rendered by systemd-networkd (as netplan does
//! on Ubuntu) with resolv.conf on systemd-resolved's stub, vendor data
//! that makes cloud-init write the `127.0.1.1 <fqdn> <short>` hosts line,
//! a swap file in fstab (curtin's `/swap.img`), `needrestart`, a package
//! upgrade holding the dpkg lock as unattended-upgrades does at first boot,
//! containerd enabled and running before node-init with its stock config,
//! the kubeadm double (which restarts the kubelet through systemd and
//! waits for it, as kubeadm does), the kubelet double unit (refusing swap,
//! crash-looping until kubeadm writes its config), a CRI client, version 1
//! of the package, and a unit that reports on the console and powers off
//! once the first boot is done.
//!
//! The guest's only network is that tap: QEMU's `restrict=on` user
//! networking drops the guest's UDP, so it could not carry the DNS queries
//! the dns stage makes to bind9.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::bind9::Named;
use crate::clock::ntp_server;
use crate::cluster::Secrets;
use crate::kube::{ApiServer, ClusterCa, Serve, api_server};
use crate::maas::Metadata;
use crate::net::{Background, Netns, file_server, intercepting_proxy_routes};
use crate::registry::{KUBE_VIP, Registry, install_cri_pull, kubernetes_images};
use crate::vm::{Boot, MAC, make_disk, unpacked};
use crate::{apt, enable, kubeadm, kubelet, run, write_mode, yaml_block};

/// The apt repository's name, which only the proxy resolves.
pub const REPO: &str = "repo.node-init.test";
/// The MAAS domain the machine is deployed in.
pub const DOMAIN: &str = "dc1.example";
/// MAAS's `local-hostname` for the machine: its FQDN.
pub const FQDN: &str = "node1.dc1.example";
/// The machine's system id in MAAS.
pub const SYSTEM_ID: &str = "xq7kpd";
/// The Kubernetes version the cluster config names and the doubles play.
pub const VERSION: &str = "v1.31.4";
/// The machine's node key in MAAS, `consumer:token:secret`.
pub const NODE_KEY: &str = "Vm4consumerKey7pQa:Vm4tokenKey2xRtY:Vm4nodeTokenSecret8kLmNq";
/// What the upgrade weighs: a kernel's upgrade set is about this (the
/// image, its modules and headers), and its postinst works on it.
pub const UPGRADE_BYTES: usize = 40 * 1024 * 1024;
/// The package whose upgrade holds the dpkg lock at first boot.
pub const HOLDER: &str = "e2e-unattended-upgrade";

/// Who does the first boot's jobs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    NodeInit,
    /// cloud-init's own modules, as a user would write them without
    /// node-init: `ca_certs`, `apt: proxy`, `package_upgrade` with
    /// `package_reboot_if_required`, `write_files` and `runcmd` preparing
    /// the host and calling kubeadm (Cluster API's kubeadm bootstrap
    /// provider's shape).
    CloudInit,
}

/// What the patch finds in the repository.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Patch {
    /// An upgrade whose postinst asks for a reboot (a kernel's).
    Reboot,
    /// An upgrade that needs no reboot: every change must take effect live.
    Live,
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
    pub metadata: Metadata,
    pub registry: Registry,
    /// "METHOD PATH" the repository served.
    pub repo_log: Arc<Mutex<Vec<String>>>,
    /// "CONNECT host:port" per tunnel the proxy opened.
    pub proxy_log: Arc<Mutex<Vec<String>>>,
}

impl World {
    pub fn new() -> Self {
        Self::with(Patch::Reboot)
    }

    pub fn with(patch: Patch) -> Self {
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
        let named = Named::start(work.path(), ns.host_ip, guest, DOMAIN);

        // The apt repository: version 2 of the test package, and the
        // distribution registry with every image a control-plane join and
        // kube-vip pull, both reachable only through the proxy.
        let repo = work.path().join("repo");
        let upgrade = apt::deb_weighing(work.path(), "2", UPGRADE_BYTES, patch == Patch::Reboot);
        apt::flat_repo(&repo, &upgrade);
        let (repo_addr, repo_log) = file_server(&bg, repo);
        let registry = Registry::start(&work.path().join("registry"));
        let mut images = kubernetes_images(VERSION, "registry.k8s.io");
        images.push(KUBE_VIP.to_owned());
        registry.push_real_sizes(&images);
        let proxy_ca = ClusterCa::named("node-init e2e intercepting proxy CA");
        let routes = vec![
            (REPO.to_owned(), repo_addr),
            ("registry.k8s.io".to_owned(), registry.addr()),
            ("ghcr.io".to_owned(), registry.addr()),
        ];
        let (_, proxy_log) = intercepting_proxy_routes(
            &bg,
            SocketAddr::new(ns.host_ip.into(), 3128),
            &proxy_ca.cert_pem,
            &proxy_ca.key_pem,
            routes,
        );
        // MAAS's metadata service on the region's port, as the guest's
        // datasource and status reports reach it.
        let metadata = Metadata::start_on(&bg, SocketAddr::new(ns.host_ip.into(), 5240), SYSTEM_ID, NODE_KEY);
        // The rack controller's NTP the vendor data points the guest at.
        ntp_server(&bg, SocketAddr::new(ns.host_ip.into(), 123));
        let secrets = Secrets::new();
        let cluster_ca = secrets.cluster_ca();
        Self { bg, ns, work, guest, vip, secrets, cluster_ca, proxy_ca, named, metadata, registry, repo_log, proxy_log }
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
    /// VIP. No DNS servers and no domain: node-init must find MAAS's
    /// behind resolved's stub, and the FQDN in the datasource.
    pub fn cluster_yaml(&self, patch: bool) -> String {
        let host = self.ns.host_ip;
        format!(
            "proxy:\n  http: http://{host}:3128\n  https: http://{host}:3128\n  ca_cert: |\n{}\
             os: {{patch: {patch}, reboot: if-required}}\n\
             dns: {{timeout: 3m}}\n\
             kubernetes:\n  endpoint: {}:6443\n  version: {VERSION}\n  discovery_timeout: 2m\n",
            yaml_block(&self.proxy_ca.cert_pem, 4),
            self.vip
        )
    }

    /// The image unpacked, what curtin and the machine add (see the
    /// module's doc), then a disk. The datasource serves `user_data` from
    /// now on.
    pub fn disk(&self, name: &str, user_data: &str, tool: Tool) -> (PathBuf, tempfile::TempDir) {
        let tree = unpacked();
        let t = tree.path();
        // MAAS's datasource, as curtin configures it: the metadata URL and
        // the node's tokens (90_maas_cloud_config.cfg), the reporting
        // webhook, and the datasource list (90_maas_datasource.cfg).
        self.metadata.serve(FQDN, user_data, Some(&self.vendor_data()));
        self.metadata.curtin_files(t);
        write_mode(t, "etc/cloud/cloud.cfg.d/90_maas_datasource.cfg", "datasource_list: [ MAAS ]\n", 0o644);
        // The network as MAAS describes it to curtin (50-curtin-networking):
        // the address, MAAS's DNS server and search domain; rendered for
        // systemd-networkd, which feeds them to resolved, as netplan does.
        write_mode(
            t,
            "etc/cloud/cloud.cfg.d/50-curtin-networking.cfg",
            &format!(
                "network:\n  version: 2\n  ethernets:\n    eth0:\n      match: {{macaddress: \"{MAC}\"}}\n      \
                 set-name: eth0\n      addresses: [{}/24]\n      nameservers:\n        addresses: [{}]\n        \
                 search: [{DOMAIN}]\n",
                self.guest, self.ns.host_ip
            ),
            0o644,
        );
        write_mode(
            t,
            "etc/cloud/cloud.cfg.d/10-e2e-renderer.cfg",
            "system_info:\n  network:\n    renderers: [networkd]\n    activators: [networkd]\n",
            0o644,
        );
        for (unit, wanted_by) in [
            ("systemd-networkd.service", "multi-user.target"),
            ("systemd-networkd.socket", "sockets.target"),
            ("systemd-networkd-wait-online.service", "network-online.target"),
        ] {
            enable(t, &format!("/lib/systemd/system/{unit}"), wanted_by);
        }
        // Stock Ubuntu's resolv.conf (systemd-resolved's postinst makes it
        // so; kept whatever the image did).
        let resolv = t.join("etc/resolv.conf");
        let _ = std::fs::remove_file(&resolv);
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &resolv).unwrap();
        // curtin's swap file, in fstab as curtin writes it.
        let swap = t.join("swap.img");
        run(std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=64", "status=none"])
            .arg(format!("of={}", swap.display())));
        std::fs::set_permissions(&swap, std::fs::Permissions::from_mode(0o600)).unwrap();
        run(std::process::Command::new("mkswap").arg("-q").arg(&swap));
        write_mode(t, "etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n/swap.img none swap sw 0 0\n", 0o644);
        write_mode(t, "etc/apt/sources.list", &format!("deb [trusted=yes] https://{REPO}/ ./\n"), 0o644);
        // What unattended-upgrades does at a first boot: an upgrade
        // through apt and dpkg, holding their locks while its postinst
        // works, started as node-init starts.
        let holder = apt::package(self.work.path(), HOLDER, "1", Some("sleep 60\n"));
        std::fs::create_dir_all(t.join("var/cache/e2e")).unwrap();
        std::fs::copy(&holder, t.join("var/cache/e2e/holder.deb")).unwrap();
        write_mode(
            t,
            "etc/systemd/system/e2e-unattended-upgrade.service",
            "[Unit]\nDescription=e2e: an upgrade holding the dpkg lock, as unattended-upgrades at first boot\n\
             After=cloud-config.service\n\n[Service]\nType=oneshot\n\
             Environment=DEBIAN_FRONTEND=noninteractive\n\
             ExecStart=/usr/bin/apt-get install -y /var/cache/e2e/holder.deb\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            0o644,
        );
        enable(t, "/etc/systemd/system/e2e-unattended-upgrade.service", "multi-user.target");
        kubeadm::install(t);
        // What the TLS bootstrap of a join will leave, for the double to lay
        // down when kubeadm gets there.
        let server = format!("{}:6443", self.vip);
        kubeadm::kubelet_files(&t.join("var/log/kubeadm/issue"), &self.cluster_ca, &server, FQDN);
        kubelet::install(t);
        install_cri_pull(t);
        let (after, done, report) = match tool {
            Tool::NodeInit => (
                "node-init.service",
                "/var/lib/node-init/done",
                "echo e2e-report: bootstrap-success $(ls /run/cluster-api); \
                 /usr/local/sbin/node-init status --output json > /var/lib/node-init-e2e-status.json; \
                 echo e2e-report: status $?; \
                 echo e2e-report: unit $(systemctl show -p Result --value node-init.service); \
                 echo e2e-report: kubelet $(systemctl is-active kubelet); \
                 echo e2e-report: fqdn $(hostname --fqdn); \
                 echo e2e-report: resolv $(readlink /etc/resolv.conf); \
                 echo e2e-report: ip_forward $(cat /proc/sys/net/ipv4/ip_forward); \
                 echo e2e-report: modules $(ls -d /sys/module/br_netfilter /sys/module/overlay); \
                 echo e2e-report: swaps $(tail -n +2 /proc/swaps | wc -l); \
                 if [ -f /etc/kubernetes/manifests/kube-vip.yaml ]; then for i in $(seq 90); do \
                 ctr -n k8s.io images ls -q | grep -q kube-vip && break; sleep 1; done; fi; \
                 echo e2e-report: images $(ctr -n k8s.io images ls -q | grep -v ^sha256 | sort); \
                 echo e2e-report: containerd $(systemctl is-active containerd) \
                 $(tr \"[:cntrl:]\" \" \" < /proc/$(pidof containerd)/environ | grep -c HTTPS_PROXY=)",
            ),
            Tool::CloudInit => {
                // node-init stands aside: its unit runs only without this.
                write_mode(t, "var/lib/node-init/done", "", 0o644);
                (
                    "cloud-final.service",
                    "/var/lib/e2e-cloud-init-done",
                    // Inside the unit's single-quoted `sh -c`.
                    "cloud-init analyze blame | sed \"s/^/e2e-blame: /\"",
                )
            }
        };
        write_mode(
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
        enable(t, "/etc/systemd/system/e2e-report.service", "cloud-init.target");
        apt::install(t, &apt::deb(self.work.path(), "1"));
        let disk = self.work.path().join(format!("{name}.img"));
        make_disk(t, &disk);
        (disk, tree)
    }

    /// The vendor data MAAS generates for the machine
    /// (`metadataserver/vendor_data.py`): its rack controller's NTP, which
    /// cloud-init's `ntp` module gives to systemd-timesyncd; and cloud-init
    /// managing /etc/hosts from its Debian template, which writes the
    /// `127.0.1.1 <fqdn> <short>` line resolved's stub answers from. MAAS
    /// serves it as YAML whose `cloud-init` key holds the cloud-config:
    /// the only dict cloud-init takes (`convert_vendordata` in
    /// `cloudinit/sources/__init__.py`).
    fn vendor_data(&self) -> String {
        format!(
            "cloud-init: |\n  #cloud-config\n  ntp:\n    servers: [{}]\n    pools: []\n  manage_etc_hosts: true\n",
            self.ns.host_ip
        )
    }

    /// Boots the disk on this world's network until the guest powers off,
    /// or `stop` says so.
    pub fn boot(&self, name: &str, disk: PathBuf, tree: &Path, stop: impl Fn(&str) -> bool) -> Boot {
        crate::vm::boot(&self.ns, self.work.path(), name, disk, tree, stop)
    }
}

impl Drop for World {
    /// A failed test's serial logs, disks and stand-ins' files stay for
    /// whoever reads the failure.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.work.disable_cleanup(true);
            eprintln!("the failed boot's files are kept in {}", self.work.path().display());
        }
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}
