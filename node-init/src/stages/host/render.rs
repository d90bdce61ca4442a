//! Pure rendering for the `host` stage: the modules-load and sysctl files,
//! `/etc/fstab` with its swap lines commented out, containerd's config, the
//! pause image kubeadm expects, and systemd's name for a swap unit. Nothing
//! here touches the disk; golden files under `tests/fixtures/host/` hold the
//! expected text.

use crate::config::values::{ImageRepository, KubeVersion};

/// The first words of every file node-init writes whole here; a
/// containerd config without them was written by someone else.
pub const WRITTEN_BY: &str = "# Written by node-init";

/// What a swap line in `/etc/fstab` is prefixed with, so a rerun (and an
/// operator) can tell which lines node-init disabled.
pub const SWAP_PREFIX: &str = "# disabled by node-init: ";

pub const MODULES: [&str; 2] = ["overlay", "br_netfilter"];

pub const SYSCTLS: [(&str, &str); 3] = [
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
];

/// `/etc/modules-load.d/`: read by systemd-modules-load at every boot,
/// before systemd-sysctl, so the bridge sysctls find their module.
pub fn modules_load() -> String {
    let mut out = format!(
        "{WRITTEN_BY} for kubeadm and the kubelet: containerd's overlayfs snapshotter\n\
         # needs overlay; bridged pod traffic must pass iptables (br_netfilter).\n"
    );
    for m in MODULES {
        out.push_str(m);
        out.push('\n');
    }
    out
}

/// `/etc/sysctl.d/`: forwarding and bridge netfilter, as kubeadm's
/// preflight and every CNI plugin expect.
pub fn sysctl_conf() -> String {
    let mut out = format!("{WRITTEN_BY} for kubeadm and the kubelet; changes here are replaced.\n");
    for (key, value) in SYSCTLS {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

/// `/etc/fstab` with swap turned off for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEdit {
    pub text: String,
    /// Lines commented out by this edit.
    pub disabled: usize,
    /// Every swap device or file named, whether disabled now or earlier.
    pub swaps: Vec<String>,
}

/// Comments out every line whose third field is `swap`, prefixed with
/// [`SWAP_PREFIX`]; every other byte stays as it was. Lines disabled by an
/// earlier run still count in `swaps`, so their units stay masked.
pub fn fstab_without_swap(text: &str) -> FstabEdit {
    let mut edit = FstabEdit { text: String::with_capacity(text.len()), disabled: 0, swaps: Vec::new() };
    for line in text.split_inclusive('\n') {
        if let Some(old) = line.strip_prefix(SWAP_PREFIX) {
            edit.swaps.extend(swap_spec(old));
            edit.text.push_str(line);
            continue;
        }
        if let Some(spec) = swap_spec(line) {
            edit.text.push_str(SWAP_PREFIX);
            edit.swaps.push(spec);
            edit.disabled += 1;
        }
        edit.text.push_str(line);
    }
    edit
}

/// The device or file of an fstab swap line; `None` for anything else.
fn swap_spec(line: &str) -> Option<String> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields.get(2) == Some(&"swap")).then(|| unescape_octal(fields[0]))
}

/// The swap files and devices `/proc/swaps` lists as active.
pub fn active_swaps(proc_swaps: &str) -> Vec<String> {
    proc_swaps.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(unescape_octal).collect()
}

/// fstab and `/proc/swaps` write a space as `\040`.
fn unescape_octal(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let digits = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match digits.map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'))) {
            Some(n) if n <= 0xff => {
                out.push(n as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `.swap` unit systemd makes for a swap device or file, named as
/// `systemd-escape -p --suffix=swap` names it (fstab's `UUID=` and friends
/// as systemd-fstab-generator resolves them). `None` for a name that is no
/// path.
pub fn swap_unit(spec: &str) -> Option<String> {
    let path = match spec.split_once('=') {
        Some((tag @ ("UUID" | "LABEL" | "PARTUUID" | "PARTLABEL"), value)) => {
            format!("/dev/disk/by-{}/{value}", tag.to_ascii_lowercase())
        }
        _ => spec.to_owned(),
    };
    if !path.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    let mut name = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            name.push('-');
        }
        for (j, c) in part.bytes().enumerate() {
            let plain = c.is_ascii_alphanumeric() || c == b':' || c == b'_' || (c == b'.' && (i, j) != (0, 0));
            if plain { name.push(char::from(c)) } else { name.push_str(&format!("\\x{c:02x}")) }
        }
    }
    Some(name + ".swap")
}

/// The pause image tag kubeadm uses for a Kubernetes minor: kubeadm's
/// `constants.PauseVersion` in each `release-1.N` branch of
/// kubernetes/kubernetes (cmd/kubeadm/app/constants/constants.go), as
/// `kubeadm config images list` prints it (minikube's
/// pkg/minikube/constants/constants_kubeadm_images.go records it per
/// release); 3.10.1 from 1.34 on (kubernetes/kubernetes#130713). A minor
/// newer than this table gets the newest tag known here: kubeadm's
/// preflight then only warns that the sandbox image differs.
pub fn pause_version(v: KubeVersion) -> &'static str {
    match v.minor {
        ..=20 => "3.2",
        21 => "3.4.1",
        22 => "3.5",
        23 => "3.6",
        24 => "3.7",
        25 => "3.8",
        26..=30 => "3.9",
        31..=33 => "3.10",
        34.. => "3.10.1",
    }
}

/// The sandbox ("pause") image: from `kubernetes.image_repository` when
/// set, so an air-gapped node pulls it from the same mirror as kubeadm.
pub fn sandbox_image(repo: Option<&ImageRepository>, v: KubeVersion) -> String {
    let repo = repo.map_or(crate::config::DEFAULT_IMAGE_REPOSITORY, |r| r.0.as_str());
    format!("{repo}/pause:{}", pause_version(v))
}

/// `/etc/containerd/config.toml`, config version 2: what containerd 1.6
/// and 1.7 read (Debian bookworm, Ubuntu 22.04 and 24.04); containerd 2.x
/// migrates it on load. The whole file is node-init's: a packaged config
/// such as containerd.io's `disabled_plugins = ["cri"]` would keep the
/// kubelet from talking to containerd at all.
pub fn containerd_config(sandbox_image: &str) -> String {
    const CRI: &str = "plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        "{WRITTEN_BY} for kubeadm and the kubelet; changes here are replaced.\n\
         # A config found here before node-init is kept as config.toml.node-init-orig.\n\
         version = 2\n\
         \n\
         [{CRI}]\n  sandbox_image = \"{sandbox_image}\"\n\
         \n\
         [{CRI}.containerd]\n  default_runtime_name = \"runc\"\n\
         \n\
         [{CRI}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         \n\
         # The kubelet's cgroup driver is systemd (kubeadm's default since 1.22):\n\
         # runc must use the same, or pods end up in two cgroup trees.\n\
         [{CRI}.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_units_are_named_as_systemd_escape_names_them() {
        assert_eq!(swap_unit("/swap.img").as_deref(), Some("swap.img.swap"));
        assert_eq!(swap_unit("/dev/sda3").as_deref(), Some("dev-sda3.swap"));
        assert_eq!(swap_unit("UUID=12ab-34cd").as_deref(), Some("dev-disk-by\\x2duuid-12ab\\x2d34cd.swap"));
        assert_eq!(swap_unit("/var//.swapfile").as_deref(), Some("var-.swapfile.swap"));
        assert_eq!(swap_unit("/.hidden").as_deref(), Some("\\x2ehidden.swap"));
        assert_eq!(swap_unit("/my swap").as_deref(), Some("my\\x20swap.swap"));
        assert_eq!(swap_unit("none"), None);
        assert_eq!(swap_unit("/"), None);
    }

    #[test]
    fn proc_swaps_lists_active_swap_with_spaces_unescaped() {
        let t = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                 /swap.img                               file\t\t4194300\t\t0\t\t-2\n\
                 /my\\040swap                             file\t\t1024\t\t0\t\t-3\n";
        assert_eq!(active_swaps(t), ["/swap.img", "/my swap"]);
        assert!(active_swaps("Filename\tType\tSize\tUsed\tPriority\n").is_empty());
    }

    #[test]
    fn a_second_edit_of_fstab_changes_nothing_and_still_names_the_swap() {
        let once = fstab_without_swap("/dev/sda1 / ext4 defaults 0 1\n  /swap.img\tnone\tswap\tsw\t0\t0");
        assert_eq!(
            once.text,
            "/dev/sda1 / ext4 defaults 0 1\n# disabled by node-init:   /swap.img\tnone\tswap\tsw\t0\t0"
        );
        assert_eq!((once.disabled, once.swaps.as_slice()), (1, ["/swap.img".to_owned()].as_slice()));
        let twice = fstab_without_swap(&once.text);
        assert_eq!((twice.text.as_str(), twice.disabled), (once.text.as_str(), 0));
        assert_eq!(twice.swaps, once.swaps);
    }

    #[test]
    fn pause_follows_the_kubernetes_minor() {
        let v = |s: &str| s.parse::<KubeVersion>().unwrap();
        assert_eq!(pause_version(v("v1.30.9")), "3.9");
        assert_eq!(pause_version(v("v1.31.0")), "3.10");
        assert_eq!(pause_version(v("v1.33.2")), "3.10");
        assert_eq!(pause_version(v("v1.34.1")), "3.10.1");
        let mirror: ImageRepository = "mirror.corp:5000/k8s".parse().unwrap();
        assert_eq!(sandbox_image(Some(&mirror), v("v1.28.3")), "mirror.corp:5000/k8s/pause:3.9");
    }
}
