//! The files `kubernetes` hands to kubeadm and the kubelet: the kubeadm
//! configuration for each role and API version, and kube-vip's static pod.
//!
//! Every value here was validated with the config (tokens, hashes, CIDRs,
//! addresses), so the YAML is written directly; the free-form strings (node
//! name, kubelet flag values) are quoted. Golden files under
//! `tests/fixtures/kubeadm/` pin the output.

use std::fmt::Write as _;
use std::time::Duration;

use super::local::Local;
use crate::config::values::{CertKey, KubeVersion, Token};
use crate::config::{Kubernetes, Member, Vip};

/// kubeadm's config API for a Kubernetes version: v1beta4 from 1.31 on.
pub fn api_version(v: KubeVersion) -> &'static str {
    if (v.major, v.minor) >= (1, 31) { "kubeadm.k8s.io/v1beta4" } else { "kubeadm.k8s.io/v1beta3" }
}

fn v1beta4(v: KubeVersion) -> bool {
    api_version(v).ends_with("v1beta4")
}

/// From 1.29, `kubeadm init` writes admin.conf only once the cluster is up,
/// so kube-vip must read super-admin.conf while it runs.
pub fn kube_vip_needs_super_admin(v: KubeVersion) -> bool {
    (v.major, v.minor) >= (1, 29)
}

const CONTROL_PLANE_TIMEOUT: Duration = Duration::from_secs(240);

/// A YAML scalar that stays a string whatever it holds.
fn quote(s: &str) -> String {
    // serde_json writes a str as a JSON string, which YAML reads as the
    // same string; it cannot fail for a str.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// A duration as Go prints it: `5m0s`, `24h0m0s`, `30s`.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

/// `nodeRegistration`: the name and the kubelet's extra flags, a map in
/// v1beta3 and a list of {name, value} in v1beta4.
fn node_registration(out: &mut String, v: KubeVersion, local: &Local) {
    out.push_str("nodeRegistration:\n");
    if let Some(name) = &local.name {
        let _ = writeln!(out, "  name: {}", quote(name));
    }
    if local.kubelet_args.is_empty() {
        return;
    }
    out.push_str("  kubeletExtraArgs:\n");
    for (flag, value) in &local.kubelet_args {
        if v1beta4(v) {
            let _ = writeln!(out, "  - name: {flag}\n    value: {}", quote(value));
        } else {
            let _ = writeln!(out, "    {flag}: {}", quote(value));
        }
    }
}

/// InitConfiguration and ClusterConfiguration for the first control-plane
/// node. `--upload-certs` goes on the command line: neither API version
/// has a field for it. The token lives `kubernetes.token_ttl` (`0s`:
/// kubeadm never deletes it).
pub fn init_config(k: &Kubernetes, token: &Token, key: &CertKey, v: KubeVersion, local: &Local) -> String {
    let api = api_version(v);
    let mut out = format!("apiVersion: {api}\nkind: InitConfiguration\n");
    let _ = write!(
        out,
        "bootstrapTokens:\n- token: {}\n  ttl: {}\n  groups:\n  - system:bootstrappers:kubeadm:default-node-token\n  \
         usages:\n  - signing\n  - authentication\n",
        token.expose(),
        go_duration(k.token_ttl.0)
    );
    let _ = writeln!(out, "certificateKey: {}", key.0.expose());
    out.push_str("localAPIEndpoint:\n");
    if let Some(a) = local.advertise {
        let _ = writeln!(out, "  advertiseAddress: {}", quote(&a.to_string()));
    }
    let _ = writeln!(out, "  bindPort: {}", k.endpoint.port);
    node_registration(&mut out, v, local);
    if v1beta4(v) {
        let t = go_duration(CONTROL_PLANE_TIMEOUT);
        let _ = writeln!(out, "timeouts:\n  controlPlaneComponentHealthCheck: {t}\n  kubeletHealthCheck: {t}");
    }
    let _ = write!(
        out,
        "---\napiVersion: {api}\nkind: ClusterConfiguration\nkubernetesVersion: {v}\ncontrolPlaneEndpoint: {}\n\
         networking:\n  podSubnet: {}\n  serviceSubnet: {}\n",
        k.endpoint, k.pod_cidr, k.service_cidr
    );
    if let Some(repo) = &k.image_repository {
        let _ = writeln!(out, "imageRepository: {repo}");
    }
    if !v1beta4(v) {
        let _ = writeln!(out, "apiServer:\n  timeoutForControlPlane: {}", go_duration(CONTROL_PLANE_TIMEOUT));
    }
    out
}

/// JoinConfiguration for a control-plane or worker node. Discovery uses
/// the token and every configured CA pin, as node-init's own check did.
pub fn join_config(k: &Kubernetes, token: &Token, v: KubeVersion, local: &Local) -> String {
    let token = token.expose();
    let mut out = format!("apiVersion: {}\nkind: JoinConfiguration\n", api_version(v));
    let _ = write!(out, "discovery:\n  bootstrapToken:\n    apiServerEndpoint: {}\n    token: {token}\n", k.endpoint);
    out.push_str("    caCertHashes:\n");
    for h in k.ca_cert_hashes() {
        let _ = writeln!(out, "    - {}", h.0);
    }
    let _ = writeln!(out, "  tlsBootstrapToken: {token}");
    let discovery = go_duration(k.discovery_timeout.0);
    if !v1beta4(v) {
        let _ = writeln!(out, "  timeout: {discovery}");
    }
    node_registration(&mut out, v, local);
    if let Member::ControlPlane { certificate_key: key, .. } = &k.member {
        let _ = write!(out, "controlPlane:\n  certificateKey: {}\n  localAPIEndpoint:\n", key.0.expose());
        if let Some(a) = local.advertise {
            let _ = writeln!(out, "    advertiseAddress: {}", quote(&a.to_string()));
        }
        let _ = writeln!(out, "    bindPort: {}", k.endpoint.port);
    }
    if v1beta4(v) {
        let _ = writeln!(out, "timeouts:\n  discovery: {discovery}\n  tlsBootstrap: {discovery}");
    }
    out
}

pub const KUBE_VIP_MANIFEST: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
pub const SUPER_ADMIN_CONF: &str = "/etc/kubernetes/super-admin.conf";

/// kube-vip as a static pod: ARP announcements for the VIP on the given
/// interface, control-plane load balancing off, leader election on a
/// Lease so exactly one node holds the address. `kubeconfig` is the file
/// it talks to the API server with (super-admin.conf during init on 1.29+).
pub fn kube_vip_manifest(k: &Kubernetes, vip: &Vip, interface: &str, kubeconfig: &str) -> String {
    let env = [
        ("vip_arp", "true".to_owned()),
        ("port", k.endpoint.port.to_string()),
        ("vip_interface", interface.to_owned()),
        ("vip_cidr", if k.endpoint.ip().is_some_and(|ip| ip.is_ipv6()) { "128" } else { "32" }.to_owned()),
        ("cp_enable", "true".to_owned()),
        ("cp_namespace", "kube-system".to_owned()),
        ("vip_leaderelection", "true".to_owned()),
        ("vip_leasename", "plndr-cp-lock".to_owned()),
        ("vip_leaseduration", "5".to_owned()),
        ("vip_renewdeadline", "3".to_owned()),
        ("vip_retryperiod", "1".to_owned()),
        ("address", k.endpoint.host.clone()),
    ];
    let mut out = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-vip\n  namespace: kube-system\nspec:\n  containers:\n  \
         - name: kube-vip\n    args:\n    - manager\n    env:\n",
    );
    for (name, value) in env {
        let _ = writeln!(out, "    - name: {name}\n      value: {}", quote(&value));
    }
    let _ = write!(
        out,
        "    image: {}\n    imagePullPolicy: IfNotPresent\n    securityContext:\n      capabilities:\n        add:\n        \
         - NET_ADMIN\n        - NET_RAW\n    volumeMounts:\n    - mountPath: /etc/kubernetes/admin.conf\n      \
         name: kubeconfig\n  hostAliases:\n  - hostnames:\n    - kubernetes\n    ip: 127.0.0.1\n  hostNetwork: true\n  \
         volumes:\n  - name: kubeconfig\n    hostPath:\n      path: {kubeconfig}\n",
        vip.image
    );
    out
}
