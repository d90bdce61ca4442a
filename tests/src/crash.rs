//! The node the whole-pipeline crash test kills: a worker in the real
//! Debian root whose first boot proxies with a proxy CA (so the root's own
//! update-ca-certificates runs), patches with the root's apt from a local
//! repository whose new version's preinst and postinst take a while (so
//! kills land inside dpkg, while it unpacks and while it configures), and joins the API stand-in with the kubeadm double made
//! as slow as a real join, its TLS bootstrap in the middle (so kills land
//! before, during and after kubeadm). Beside the patch, node-init pulls the
//! worker's images through a real containerd serving on the root's own
//! socket, from the registry behind an intercepting proxy ([`Behind`]); a
//! power cut takes that containerd too, and it starts again with the node.
//! The root is prepared once; each run gets it fresh as an overlay
//! ([`crate::overlay`]).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::apt::{self, PKG};
use crate::cluster::{Secrets, userdata};
use crate::kube::{ApiServer, Serve, api_server};
use crate::net::Background;
use crate::registry::{Behind, Containerd};
use crate::rootfs::{chroot, extracted};
use crate::{PATH, bin, output, run, self_signed, set_boot_id, text, yaml_block};

/// The node's name, in its kubelet certificate and the API's Node object.
pub const NODE: &str = "node2.maas";
/// How long version 2's preinst and postinst and each half of a join take.
const PREINST: &str = "sleep 0.5\n";
const POSTINST: &str = "sleep 1.5\n";
const JOIN_HALF: &str = "0.7";

/// The images a v1.31.4 worker pulls (node-init's pre-pull); kube-proxy
/// weighs enough that a kill can land while containerd fetches it.
pub const IMAGES: [(&str, usize); 2] =
    [("registry.k8s.io/kube-proxy:v1.31.4", 32 * 1024 * 1024), ("registry.k8s.io/pause:3.10", 300 * 1024)];

/// The prepared root, the cluster it joins and the registry it pulls from.
pub struct World {
    pub template: tempfile::TempDir,
    pub api: ApiServer,
    pub pulls: Behind,
    _bg: Background,
    _secrets: Secrets,
}

impl World {
    pub fn new() -> Self {
        let secrets = Secrets::new();
        let ca = secrets.cluster_ca();
        let bg = Background::new();
        let api = api_server(&bg, "127.0.0.1:0".parse().expect("addr"), &ca, &secrets.get("token"), Serve::Good);
        // The Node object is there once its kubelet has credentials; in a
        // chroot no kubelet runs, so the stand-in has it from the start.
        api.register(NODE);
        let template = template(&api.addr.to_string(), &secrets);
        let pulls = Behind::routing(&["registry.k8s.io"]);
        for (image, bytes) in IMAGES {
            let (name, tag) = crate::registry::split_reference(image);
            pulls.registry.push(&name, &tag, bytes);
        }
        Self { template, api, pulls, _bg: bg, _secrets: secrets }
    }

    /// The node's containerd, as its boot starts it: on the root's own
    /// socket, its content kept under the root's `run/containerd`.
    pub fn containerd(&self, root: &Path) -> Containerd {
        self.pulls.containerd(&root.join("run/containerd"))
    }

    /// The images `containerd` does not have, asked through its CRI.
    pub fn missing(&self, containerd: &Containerd) -> Vec<&'static str> {
        IMAGES.iter().map(|(i, _)| *i).filter(|i| !self.pulls.present(containerd, i)).collect()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// `node-init run --root ROOT` as the unit runs it, logging at debug so
/// every step is a line.
pub fn command(root: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["run", "--root"]).arg(root).env_clear().env("PATH", PATH).env("NODE_INIT_LOG", "debug");
    c.stdin(Stdio::null());
    c
}

/// The test package's state as the root's dpkg records it.
pub fn dpkg_status(root: &Path) -> String {
    text(&output(&mut chroot(root, &["dpkg-query", "-W", "-f=${Status}", PKG])).stdout)
}

/// `kubeadm reset` calls so far, and those that found a joined node's
/// kubelet.conf to wipe.
pub fn resets(root: &Path) -> (usize, usize) {
    let read = |f: &str| std::fs::read_to_string(root.join("var/log/kubeadm").join(f)).unwrap_or_default();
    (read("argv").lines().filter(|l| l.starts_with("reset")).count(), read("reset-member").lines().count())
}

/// kubeadm as slow as a real join: the double's work (the TLS bootstrap's
/// kubelet.conf) comes between two waits. Each reset is noted when a
/// joined node's kubelet.conf is there to be wiped.
fn slow_kubeadm() -> String {
    format!(
        "#!/bin/sh\nif [ \"$1\" = reset ] && [ -f /etc/kubernetes/kubelet.conf ]; then\n  \
         mkdir -p /var/log/kubeadm; echo \"$*\" >> /var/log/kubeadm/reset-member\nfi\n\
         case \"$1\" in init|join) sleep {JOIN_HALF};; esac\n/usr/local/bin/kubeadm-double \"$@\" || exit\n\
         case \"$1\" in init|join) sleep {JOIN_HALF};; esac\n"
    )
}

/// Version 2 of the test package, whose unpack and configure take
/// [`PREINST`]'s and [`POSTINST`]'s time; it asks for no reboot.
fn slow_upgrade(out: &Path) -> PathBuf {
    let dir = out.join("slow-2");
    let doc = dir.join("usr/share/doc").join(PKG);
    std::fs::create_dir_all(dir.join("DEBIAN")).expect("mkdir");
    std::fs::create_dir_all(&doc).expect("mkdir");
    std::fs::write(doc.join("VERSION"), "2\n").expect("write");
    let control = format!(
        "Package: {PKG}\nVersion: 2\nArchitecture: all\nMaintainer: node-init tests <t@example.invalid>\n\
         Description: a package whose configure takes a while\n"
    );
    std::fs::write(dir.join("DEBIAN/control"), control).expect("write");
    for (script, when, lines) in [("preinst", "upgrade", PREINST), ("postinst", "configure", POSTINST)] {
        let path = dir.join("DEBIAN").join(script);
        std::fs::write(&path, format!("#!/bin/sh\nset -e\nif [ \"$1\" = {when} ]; then\n  {lines}fi\n"))
            .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let deb = out.join(format!("{PKG}_2_all.deb"));
    run(Command::new("dpkg-deb").args(["--build", "--root-owner-group"]).arg(&dir).arg(&deb));
    deb
}

/// The node before its first boot: version 1 of the test package
/// installed and version 2 in the only repository, the kubeadm double
/// behind [`slow_kubeadm`] with a kubelet.conf to issue, and user data
/// that proxies with a CA, patches and joins `api`.
fn template(api: &str, secrets: &Secrets) -> tempfile::TempDir {
    let root = extracted();
    let r = root.path();
    let build = tempfile::tempdir().expect("temp dir");
    let v1 = apt::deb(build.path(), "1");
    apt::flat_repo(&r.join("srv/repo"), &slow_upgrade(build.path()));
    std::fs::write(r.join("etc/apt/sources.list"), "deb [trusted=yes] file:/srv/repo ./\n").expect("write");
    for e in std::fs::read_dir(r.join("etc/apt/sources.list.d")).expect("sources.list.d").flatten() {
        std::fs::remove_file(e.path()).expect("rm");
    }
    apt::install(r, &v1);

    crate::kubeadm::install(r);
    let bin = r.join("usr/local/bin");
    std::fs::rename(bin.join("kubeadm"), bin.join("kubeadm-double")).expect("mv");
    std::fs::write(bin.join("kubeadm"), slow_kubeadm()).expect("write");
    std::fs::set_permissions(bin.join("kubeadm"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ca = secrets.cluster_ca();
    let (cert, key) = ca.kubelet_client(NODE);
    let pem = "/var/lib/kubelet/pki/kubelet-client-current.pem";
    let issue = r.join("var/log/kubeadm/issue");
    for (rel, content) in
        [(&pem[1..], cert + &key), ("etc/kubernetes/kubelet.conf", crate::kubeadm::kubeconfig(&ca, api, pem))]
    {
        std::fs::create_dir_all(issue.join(rel).parent().expect("parent")).expect("mkdir");
        std::fs::write(issue.join(rel), content).expect("write");
    }

    let (proxy_ca, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, true);
    let cluster = format!(
        "hostname: {NODE}\nos:\n  patch: true\nproxy:\n  http: http://10.0.0.1:3128\n  https: http://10.0.0.1:3128\n  \
         ca_cert: |\n{}kubernetes:\n  endpoint: {api}\n  version: v1.31.4\n",
        yaml_block(&proxy_ca, 4)
    );
    let ud = r.join("var/lib/cloud/instance/user-data.txt");
    std::fs::create_dir_all(ud.parent().expect("parent")).expect("mkdir");
    std::fs::write(ud, userdata("worker", &cluster, secrets)).expect("write");
    set_boot_id(r, "e2e-boot-1");
    root
}
