//! `node-init join-material`: on a control-plane node of a running
//! cluster, the user data for a node that joins now, long after the init
//! node's token expired and its uploaded certificates were deleted: how a
//! one-node PCG grows to three, and how late machines join.
//!
//! kubeadm makes the material, through the runner: `kubeadm token create
//! --ttl D --print-join-command` (a fresh bootstrap token) and, for a
//! control-plane join, `kubeadm init phase upload-certs --upload-certs`
//! (the control-plane certificates uploaded again under a new certificate
//! key, which kubeadm deletes two hours later). Both let kubeadm mint the
//! secret and print it on stdout, so neither is ever in an argv (which the
//! runner logs and `ps` shows). The CA pin comes from
//! `/etc/kubernetes/pki/ca.crt`. This node's config, without what belongs
//! to one node or one role, plus the new material, goes through
//! `userdata`'s own functions, so the output is exactly what `userdata`
//! renders. Secrets reach stdout only; stderr says when the material stops
//! working.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use super::UsageError;
use super::userdata::{self, Issued, Material};
use crate::config::values::{CertKey, Ttl};
use crate::config::{self, Role};
use crate::runner::{Cmd, HostRunner, Runner};
use crate::secret::Secret;
use crate::stages::kubernetes::{CA_CERT, render::go_duration};

const TOKEN_TIMEOUT: Duration = Duration::from_secs(120);
/// kubeadm may first spend up to 10 s asking dl.k8s.io for a version.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum JoinRole {
    ControlPlane,
    Worker,
}

impl From<JoinRole> for Role {
    fn from(r: JoinRole) -> Self {
        match r {
            JoinRole::ControlPlane => Role::ControlPlane,
            JoinRole::Worker => Role::Worker,
        }
    }
}

#[derive(Debug, clap::Args)]
/// On a control-plane node, print the user data (#cloud-config) for a node
/// that joins this cluster now: a fresh bootstrap token and, for a
/// control-plane node, the control-plane certificates uploaded again under
/// a new key (kubeadm deletes them after 2h). Run as root.
pub struct Args {
    /// The new node's role.
    #[arg(long, value_enum)]
    role: JoinRole,
    /// How long the token lives [default: kubernetes.token_ttl, 24h]; 0s
    /// never expires.
    #[arg(long, value_name = "D", value_parser = |s: &str| s.parse::<Ttl>())]
    ttl: Option<Ttl>,
    /// This node's config [default: its layers, as `run` reads them].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A mounted root: files under DIR, kubeadm through chroot.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

pub async fn run(a: Args) -> Result<u8> {
    let root = super::root_arg(a.root.as_deref())?;
    let runner = HostRunner::new((!root.is_host()).then(|| root.base().to_owned()));
    let loaded = config::load(&root, a.config.as_deref())?;
    let origin = loaded.origin();
    let k = loaded.config.kubernetes.as_ref().ok_or_else(|| {
        UsageError(format!("{origin} has no kubernetes key: run join-material on a control-plane node"))
    })?;
    if k.role() == Role::Worker {
        return Err(UsageError(format!(
            "{origin} is a worker's config: run join-material on a control-plane node, which can create tokens and \
             upload the control-plane certificates"
        ))
        .into());
    }
    let role = Role::from(a.role);
    let ttl = a.ttl.unwrap_or(k.token_ttl);
    let pin = ca_pin(&root)?;
    let now = SystemTime::now();
    let token = create_token(&runner, ttl, &pin).await?;
    let certificate_key = match role {
        Role::ControlPlane => Some(upload_certs(&runner).await?),
        _ => None,
    };
    let material = Material { token, ca_hash: pin, certificate_key, ca: None };
    let doc = userdata::node_config_with(cluster_wide(loaded.merged.value.clone()), role, Some(&material), &origin)?;
    super::print(&userdata::render(&doc)?)?;
    let node = config::from_value(doc, &origin)?.kubernetes.context("the rendered config has no kubernetes key")?;
    for line in userdata::expiry(&node, ttl, Issued::At(now)) {
        eprintln!("node-init: note: {line}");
    }
    Ok(super::exit::OK)
}

/// This node's config without what is one node's (its name, its
/// addresses) or one role's (the token, pins and keys, the CA): what every
/// node of the cluster shares.
pub fn cluster_wide(mut doc: Value) -> Value {
    if let Value::Object(m) = &mut doc {
        m.remove("hostname");
        if let Some(Value::Object(k)) = m.get_mut("kubernetes") {
            for key in ["role", "token", "ca_cert_hashes", "certificate_key", "ca", "advertise_address"] {
                k.remove(key);
            }
            if let Some(Value::Object(args)) = k.get_mut("kubelet_extra_args") {
                args.remove("node-ip");
                args.remove("provider-id");
                if args.is_empty() {
                    k.remove("kubelet_extra_args");
                }
            }
        }
    }
    doc
}

/// kubeadm's pin of the cluster CA this node trusts.
fn ca_pin(root: &crate::root::Root) -> Result<String> {
    let pem = root.read_opt(CA_CERT)?.ok_or_else(|| {
        anyhow!("{} does not exist: run join-material on a control-plane node", root.path(CA_CERT).display())
    })?;
    let der = crate::pki::pem_certificates(&pem).with_context(|| format!("reading {CA_CERT}"))?;
    crate::pki::spki_sha256(&der[0])
}

/// A new bootstrap token, from `kubeadm token create --print-join-command`.
/// The pins kubeadm prints (from admin.conf's CA) must include `pin`.
async fn create_token(runner: &dyn Runner, ttl: Ttl, pin: &str) -> Result<Secret<String>> {
    let cmd =
        Cmd::new(["kubeadm", "token", "create", "--ttl", &go_duration(ttl.0), "--print-join-command"], TOKEN_TIMEOUT);
    let out = runner.run(&cmd).await.and_then(|o| o.check(&cmd)).context("creating a bootstrap token")?;
    let (token, pins) = parse_join_command(&out.stdout).map_err(|e| anyhow!("`{cmd}`: {e}"))?;
    if !pins.is_empty() && !pins.iter().any(|p| p == pin) {
        bail!("`{cmd}` printed the CA pin {}, but {CA_CERT} is {pin}: which CA is this cluster's?", pins.join(", "));
    }
    tracing::info!(token_id = %token.id, ttl = %ttl, "created a bootstrap token");
    Ok(Secret::new(token.expose()))
}

/// The token and the CA pins of the join command kubeadm prints (one line,
/// `kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash H`).
/// An error never quotes the output: it holds the token.
pub fn parse_join_command(stdout: &str) -> Result<(config::values::Token, Vec<String>)> {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let after = |flag: &str| words.windows(2).filter(|w| w[0] == flag).map(|w| w[1]).collect::<Vec<_>>();
    let [token] = after("--token")[..] else { bail!("printed no join command with one --token (output not shown)") };
    let token =
        token.parse().map_err(|_| anyhow!("printed a --token that is not a bootstrap token (value redacted)"))?;
    Ok((token, after("--discovery-token-ca-cert-hash").into_iter().map(str::to_owned).collect()))
}

/// The control-plane certificates uploaded again; the key kubeadm chose.
async fn upload_certs(runner: &dyn Runner) -> Result<Secret<String>> {
    let cmd = Cmd::new(["kubeadm", "init", "phase", "upload-certs", "--upload-certs"], UPLOAD_TIMEOUT);
    let out = runner.run(&cmd).await.and_then(|o| o.check(&cmd)).context("uploading the control-plane certificates")?;
    let key = parse_certificate_key(&out.stdout).map_err(|e| anyhow!("`{cmd}`: {e}"))?;
    tracing::info!("uploaded the control-plane certificates under a new certificate key");
    Ok(key.0)
}

/// The key after kubeadm's `[upload-certs] Using certificate key:` line.
pub fn parse_certificate_key(stdout: &str) -> Result<CertKey> {
    let mut lines = stdout.lines().map(str::trim);
    lines.by_ref().find(|l| l.ends_with("Using certificate key:"));
    let Some(line) = lines.next() else { bail!("printed no certificate key (output not shown)") };
    line.parse().map_err(|_| anyhow!("printed a certificate key that is not 64 hex digits (value redacted)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdef.0123456789abcdef";

    #[test]
    fn the_token_and_pins_of_kubeadms_join_command() {
        let hash = format!("sha256:{}", "a".repeat(64));
        let line = format!("kubeadm join 10.11.12.100:6443 --token {TOKEN} --discovery-token-ca-cert-hash {hash} \n");
        let (token, pins) = parse_join_command(&line).unwrap();
        assert_eq!(token.expose(), TOKEN);
        assert_eq!(pins, [hash]);
        for bad in ["", "kubeadm join 10.11.12.100:6443 --token abcdef.XYZ", "--token a --token b"] {
            let err = parse_join_command(bad).unwrap_err().to_string();
            assert!(!err.contains("XYZ"), "{err}");
        }
    }

    #[test]
    fn the_key_after_kubeadms_upload_certs_line() {
        let key = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let out = format!(
            "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace\n\
             [upload-certs] Using certificate key:\n{key}\n"
        );
        assert_eq!(parse_certificate_key(&out).unwrap().0.expose(), key);
        assert!(parse_certificate_key("[upload-certs] Skipping phase. Please see --upload-certs\n").is_err());
        let err = parse_certificate_key("[upload-certs] Using certificate key:\nnot-hex\n").unwrap_err().to_string();
        assert!(!err.contains("not-hex"), "{err}");
    }

    #[test]
    fn the_shared_config_keeps_the_clusters_keys_and_drops_one_nodes() {
        let doc = serde_json::json!({
            "hostname": "node1.maas",
            "proxy": {"https": "http://10.0.0.1:3128"},
            "kubernetes": {
                "role": "init", "endpoint": "10.11.12.100:6443", "token": TOKEN, "certificate_key": "k",
                "ca": {"cert": "c", "key": "k"}, "advertise_address": "10.11.12.21", "vip": {"interface": "eth0"},
                "kubelet_extra_args": {"node-ip": "10.11.12.21", "provider-id": "maas:///z/x", "node-labels": "a=b"},
            },
        });
        let shared = cluster_wide(doc);
        assert_eq!(
            shared,
            serde_json::json!({
                "proxy": {"https": "http://10.0.0.1:3128"},
                "kubernetes": {
                    "endpoint": "10.11.12.100:6443", "vip": {"interface": "eth0"},
                    "kubelet_extra_args": {"node-labels": "a=b"},
                },
            })
        );
    }
}
