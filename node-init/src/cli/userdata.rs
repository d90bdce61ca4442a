//! `node-init userdata`: the MAAS user data for one node of a cluster.
//!
//! The cluster's shared config (`--config`), the node's role and, with
//! `--secrets`, what `node-init secrets` minted, become one node-init config
//! that is validated exactly as the node will validate it, then wrapped in a
//! `#cloud-config` whose only job is `write_files` of
//! `/etc/node-init/config.d/50-userdata.yaml` (0600, root:root), a layer
//! over the image's own `/etc/node-init/config.yaml`. Everything else is done
//! by the unit baked into the image. Only the init node's data holds the
//! CA key; a worker's holds no certificate key either.
//!
//! What it renders stops working: the bootstrap token expires
//! `kubernetes.token_ttl` after the init node's `kubeadm init`, and kubeadm
//! deletes the control-plane certificates it uploaded two hours after it.
//! Both are said on stderr ([`expiry`]), with what to do after:
//! `node-init join-material` on a control-plane node.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use serde_json::{Map, Value, json};

use super::secrets::Secrets;
use crate::config::values::Ttl;
use crate::config::{self, ConfigError, Kubernetes, Role};
use crate::secret::Secret;

/// How long kubeadm keeps the control-plane certificates it uploads (the
/// `kubeadm-certs` Secret is owned by a token of this lifetime).
pub const UPLOADED_CERTS_TTL: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Init,
    ControlPlane,
    Worker,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Init => Role::Init,
            RoleArg::ControlPlane => Role::ControlPlane,
            RoleArg::Worker => Role::Worker,
        }
    }
}

#[derive(Debug, clap::Args)]
/// Print the MAAS user data (#cloud-config) for one node. A 3-node
/// cluster is three calls: --role init, then control-plane (or worker)
/// twice.
pub struct Args {
    /// The node's role.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The cluster's node-init config, shared by every node.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Secrets from `node-init secrets --out DIR`.
    #[arg(long, value_name = "DIR")]
    secrets: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<u8> {
    let (origin, cluster) = config::read_yaml_file(&a.config)?;
    let secrets = a.secrets.as_deref().map(Secrets::read).transpose()?;
    let doc = node_config(cluster, a.role.into(), secrets.as_ref(), &origin)?;
    super::print(&render(&doc)?)?;
    if let Some(k) = config::from_value(doc, &origin)?.kubernetes {
        for line in expiry(&k, k.token_ttl, Issued::AtInit) {
            eprintln!("node-init: note: {line}");
        }
    }
    Ok(super::exit::OK)
}

/// What a node's config gets besides the cluster's shared keys: the join
/// credentials and, for init only, the cluster CA.
pub struct Material {
    pub token: Secret<String>,
    pub ca_hash: String,
    pub certificate_key: Option<Secret<String>>,
    /// The CA's certificate and key (PEM).
    pub ca: Option<(String, Secret<String>)>,
}

impl From<&Secrets> for Material {
    fn from(s: &Secrets) -> Self {
        Self {
            token: Secret::new(s.token.clone()),
            ca_hash: s.ca_hash.clone(),
            certificate_key: Some(Secret::new(s.cert_key.clone())),
            ca: Some((s.ca_cert.clone(), Secret::new(s.ca_key.clone()))),
        }
    }
}

/// The node's config: the cluster's, with the role set, the secrets
/// filled in, and what this role must not hold taken out. Validated.
pub fn node_config(doc: Value, role: Role, secrets: Option<&Secrets>, origin: &str) -> Result<Value, ConfigError> {
    node_config_with(doc, role, secrets.map(Material::from).as_ref(), origin)
}

/// [`node_config`] with the material from anywhere (`join-material` mints
/// its own).
pub fn node_config_with(
    doc: Value,
    role: Role,
    material: Option<&Material>,
    origin: &str,
) -> Result<Value, ConfigError> {
    let bad =
        |key: &str, message: &str| ConfigError { origin: origin.into(), key: key.into(), message: message.into() };
    let mut doc = match doc {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        _ => return Err(bad("(top level)", "expected a mapping")),
    };
    let k = doc.entry("kubernetes").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(k) = k else { return Err(bad("kubernetes", "expected a mapping")) };
    k.insert("role".into(), role.as_str().into());
    if let Some(m) = material {
        k.insert("token".into(), m.token.expose().clone().into());
        let mut hashes: Vec<Value> = vec![m.ca_hash.clone().into()];
        if let Some(Value::Array(old)) = k.get("ca_cert_hashes") {
            hashes.extend(old.iter().filter(|h| h.as_str() != Some(&m.ca_hash)).cloned());
        }
        k.insert("ca_cert_hashes".into(), hashes.into());
        if let Some(key) = &m.certificate_key {
            k.insert("certificate_key".into(), key.expose().clone().into());
        }
        if let Some((cert, key)) = &m.ca {
            k.insert("ca".into(), json!({"cert": cert, "key": key.expose()}));
        }
    }
    if role != Role::Init {
        k.remove("ca");
    }
    if role == Role::Worker {
        k.remove("certificate_key");
    }
    let doc = Value::Object(doc);
    if config::from_value(doc.clone(), origin)?.kubernetes.is_some_and(|k| k.scrubbed()) {
        return Err(ConfigError {
            origin: origin.to_owned(),
            key: "kubernetes.token".into(),
            message: "the join material reads `scrubbed`, as node-init leaves it on a node that joined; a new \
                      node needs real material: pass --secrets, or run `node-init join-material` on a \
                      control-plane node"
                .into(),
        });
    }
    Ok(doc)
}

/// The `#cloud-config` that writes `config` where node-init reads it.
pub fn render(config: &Value) -> Result<String> {
    let content = serde_saphyr::to_string(config).context("writing the node's config as YAML")?;
    let cloud = json!({
        "write_files": [{
            "path": config::USERDATA_LAYER,
            "owner": "root:root",
            "permissions": "0600",
            "content": content,
        }]
    });
    Ok(format!("#cloud-config\n{}", serde_saphyr::to_string(&cloud).context("writing the user data")?))
}

/// When the clock of a node's join material started.
#[derive(Debug, Clone, Copy)]
pub enum Issued {
    /// Rendered before the cluster exists: the init node's `kubeadm init`
    /// creates the token and uploads the certificates, at its first boot.
    AtInit,
    /// Created at this moment by `join-material` on a live cluster.
    At(SystemTime),
}

/// When a node's user data stops working, one line each, for stderr: its
/// token lives `ttl` from `issued`.
pub fn expiry(k: &Kubernetes, ttl: Ttl, issued: Issued) -> Vec<String> {
    let Some(token) = k.token() else { return Vec::new() };
    let (id, role) = (&token.id, k.role());
    let fresh = |r: Role| format!("`node-init join-material --role {}` on a control-plane node", r.as_str());
    let mut lines = Vec::new();
    let never = |what: &str| {
        format!(
            "the bootstrap token {id}{what} never expires (kubernetes.token_ttl: 0s): delete it with `kubeadm token \
             delete {id}` once every node has joined"
        )
    };
    match issued {
        Issued::AtInit if role == Role::Init => {
            lines.push(if ttl.never_expires() {
                never(" this node creates")
            } else {
                format!(
                    "the bootstrap token {id} this node creates expires {ttl} after its kubeadm init: nodes joining \
                     later need fresh material from `node-init join-material` on a control-plane node"
                )
            });
            lines.push(format!(
                "kubeadm deletes the control-plane certificates it uploads {} after init: control-plane nodes \
                 joining later need {}",
                Ttl(UPLOADED_CERTS_TTL),
                fresh(Role::ControlPlane)
            ));
        }
        Issued::AtInit => {
            lines.push(if ttl.never_expires() {
                never("")
            } else {
                format!(
                    "this user data joins with the bootstrap token {id}, which expires {ttl} after the init node's \
                     kubeadm init: deploy this node within {ttl} of the init node's first boot, or use {} instead",
                    fresh(role)
                )
            });
            if role == Role::ControlPlane {
                lines.push(format!(
                    "it fetches the control-plane certificates kubeadm init uploaded, which kubeadm deletes after {}: \
                     deploy this node within {} of the init node's first boot, or use {} instead",
                    Ttl(UPLOADED_CERTS_TTL),
                    Ttl(UPLOADED_CERTS_TTL),
                    fresh(role)
                ));
            }
        }
        Issued::At(now) => {
            let at = |d: Duration| humantime::format_rfc3339_seconds(now + d);
            lines.push(if ttl.never_expires() {
                never("")
            } else {
                format!("the bootstrap token {id} expires in {ttl}, at {}: deploy the node before then", at(ttl.0))
            });
            if role == Role::ControlPlane {
                lines.push(format!(
                    "kubeadm deletes the control-plane certificates uploaded under the new key in {}, at {}: deploy \
                     the node before then",
                    Ttl(UPLOADED_CERTS_TTL),
                    at(UPLOADED_CERTS_TTL)
                ));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(role: &str, ttl: &str) -> Kubernetes {
        let yaml = format!(
            "kubernetes:\n  role: {role}\n  endpoint: 10.11.12.100:6443\n  token: abcdef.0123456789abcdef\n  \
             ca_cert_hashes: [sha256:{}]\n  certificate_key: {}\n{ttl}",
            "a".repeat(64),
            "b".repeat(64)
        );
        config::parse(&yaml, "t").unwrap().kubernetes.unwrap()
    }

    #[test]
    fn pre_rendered_joins_say_they_must_start_within_the_ttl_of_the_init_nodes_first_boot() {
        let at_init = |k: Kubernetes| expiry(&k, k.token_ttl, Issued::AtInit);
        let worker = at_init(k("worker", ""));
        assert_eq!(worker.len(), 1);
        assert!(worker[0].contains("token abcdef, which expires 24h after the init node's kubeadm init"));
        assert!(worker[0].contains("within 24h of the init node's first boot"), "{worker:?}");
        assert!(worker[0].contains("`node-init join-material --role worker`"), "{worker:?}");
        let cp = at_init(k("control-plane", "  token_ttl: 12h\n"));
        assert!(cp[0].contains("within 12h of the init node's first boot"), "{cp:?}");
        assert!(cp[1].contains("kubeadm deletes after 2h: deploy this node within 2h"), "{cp:?}");
        let never = at_init(k("worker", "  token_ttl: 0s\n"));
        assert!(never[0].contains("never expires") && never[0].contains("kubeadm token delete abcdef"), "{never:?}");
        assert!(!format!("{worker:?}{cp:?}").contains("0123456789abcdef"), "the token's secret was printed");
    }

    #[test]
    fn fresh_material_names_the_moment_it_stops_working() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cp = expiry(&k("control-plane", ""), "1h".parse().unwrap(), Issued::At(now));
        assert_eq!(
            cp[0],
            "the bootstrap token abcdef expires in 1h, at 2023-11-14T23:13:20Z: deploy the node before then"
        );
        assert!(cp[1].contains("in 2h, at 2023-11-15T00:13:20Z"), "{cp:?}");
    }
}
