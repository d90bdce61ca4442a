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

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde_json::{Map, Value, json};

use super::secrets::Secrets;
use crate::config::{self, ConfigError, Role};

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
    let origin = a.config.display().to_string();
    let text = std::fs::read_to_string(&a.config).map_err(|e| ConfigError {
        origin: origin.clone(),
        key: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    let secrets = a.secrets.as_deref().map(Secrets::read).transpose()?;
    let doc = node_config(config::parse_yaml_value(&text, &origin)?, a.role.into(), secrets.as_ref(), &origin)?;
    super::print(&render(&doc)?)?;
    Ok(super::exit::OK)
}

/// The node's config: the cluster's, with the role set, the secrets
/// filled in, and what this role must not hold taken out. Validated.
pub fn node_config(doc: Value, role: Role, secrets: Option<&Secrets>, origin: &str) -> Result<Value, ConfigError> {
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
    if let Some(s) = secrets {
        k.insert("token".into(), s.token.clone().into());
        let mut hashes: Vec<Value> = vec![s.ca_hash.clone().into()];
        if let Some(Value::Array(old)) = k.get("ca_cert_hashes") {
            hashes.extend(old.iter().filter(|h| h.as_str() != Some(&s.ca_hash)).cloned());
        }
        k.insert("ca_cert_hashes".into(), hashes.into());
        k.insert("certificate_key".into(), s.cert_key.clone().into());
        k.insert("ca".into(), json!({"cert": s.ca_cert, "key": s.ca_key}));
    }
    if role != Role::Init {
        k.remove("ca");
    }
    if role == Role::Worker {
        k.remove("certificate_key");
    }
    let doc = Value::Object(doc);
    config::from_value(doc.clone(), origin)?;
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
