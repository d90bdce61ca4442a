//! `node-init config`: the merged configuration as node-init reads it, each
//! key with the layer it came from, secrets redacted (a token shows its
//! public id only, a proxy URL no password), so an operator can see what a
//! node will do without seeing what it must keep.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Map, Value, json};

use super::Format;
use crate::config::values::SCRUBBED;
use crate::config::{self, Loaded};

#[derive(Debug, clap::Args)]
/// Print the merged configuration, each key with the layer it came from,
/// secrets redacted.
pub struct Args {
    /// Read only this file, as `run --config` does.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read the layers of a mounted image or chroot.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

pub fn run(a: Args) -> Result<u8> {
    let root = super::root_arg(a.root.as_deref())?;
    let loaded = config::load(&root, a.config.as_deref())?;
    let text = match a.output {
        Format::Json => serde_json::to_string_pretty(&as_json(&loaded))? + "\n",
        Format::Table => as_yaml(&loaded),
    };
    super::print(&text)?;
    Ok(super::exit::OK)
}

const SECRETS: [&str; 3] = ["kubernetes.token", "kubernetes.certificate_key", "kubernetes.ca.key"];
const URLS: [&str; 2] = ["proxy.http", "proxy.https"];

/// The value with every secret replaced.
fn redacted(path: &str, v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), redacted(&format!("{path}{}{k}", sep(path)), v))).collect())
        }
        // What node-init left after the join is no secret, and says so.
        Value::String(s) if s == SCRUBBED && SECRETS.contains(&path) => v.clone(),
        Value::String(s) if path == "kubernetes.token" => {
            Value::String(format!("{}.<redacted>", s.split('.').next().unwrap_or_default()))
        }
        _ if SECRETS.contains(&path) => Value::String("<redacted>".into()),
        Value::String(s) if URLS.contains(&path) => Value::String(without_password(s)),
        other => other.clone(),
    }
}

fn sep(path: &str) -> &'static str {
    if path.is_empty() { "" } else { "." }
}

fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<redacted>".into(),
    }
}

fn as_json(l: &Loaded) -> Value {
    json!({"layers": l.layers, "config": redacted("", &l.merged.value), "from": l.merged.from})
}

/// YAML, each leaf with a comment naming its layer.
fn as_yaml(l: &Loaded) -> String {
    let mut out = String::new();
    for (i, name) in l.layers.iter().enumerate() {
        let _ = writeln!(out, "# layer {}: {name}", i + 1);
    }
    if l.layers.is_empty() {
        out.push_str("# no layer: built-in defaults\n");
    }
    if let Value::Object(m) = redacted("", &l.merged.value) {
        write_map(&mut out, l, "", &m, 0);
    }
    out
}

fn write_map(out: &mut String, l: &Loaded, path: &str, m: &Map<String, Value>, depth: usize) {
    let pad = "  ".repeat(depth);
    for (k, v) in m {
        let here = format!("{path}{}{k}", sep(path));
        match v {
            Value::Object(child) if !child.is_empty() => {
                let _ = writeln!(out, "{pad}{k}:");
                write_map(out, l, &here, child, depth + 1);
            }
            // JSON is YAML: a scalar or a list in flow style reads back as itself.
            leaf => {
                let from = l.merged.layer_of(&here).unwrap_or("?");
                let _ = writeln!(out, "{pad}{k}: {leaf}  # {from}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layers::Layer;

    #[test]
    fn secrets_are_redacted_and_every_key_names_its_layer() {
        let layers = vec![
            Layer {
                name: "/etc/node-init/config.yaml".into(),
                value: json!({"proxy": {"http": "http://u:s3cret@10.0.0.1:3128"}, "dns": {"domain": "dc1"}}),
            },
            Layer {
                name: "/etc/node-init/config.d/50-userdata.yaml".into(),
                value: json!({"kubernetes": {
                    "role": "worker", "endpoint": "10.0.0.100:6443", "token": "abcdef.0123456789abcdef",
                    "ca_cert_hashes": [format!("sha256:{}", "a".repeat(64))]}}),
            },
        ];
        let loaded = config::merged(layers).unwrap();
        let text = as_yaml(&loaded);
        crate::testing::golden("config", "layered.yaml", &text);
        assert!(!text.contains("s3cret") && !text.contains("0123456789abcdef"), "{text}");
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(doc["kubernetes"]["token"], "abcdef.<redacted>");
        let j = as_json(&loaded);
        assert_eq!(j["from"]["proxy.http"], "/etc/node-init/config.yaml");
        assert_eq!(j["from"]["kubernetes.role"], "/etc/node-init/config.d/50-userdata.yaml");
        assert!(!j.to_string().contains("s3cret"));
    }
}
