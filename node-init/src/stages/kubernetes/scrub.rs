//! After the join: what a member no longer needs leaves the disk. The
//! bootstrap token, the certificate key and the CA key (the join material)
//! let whoever reads a stolen disk join rogue nodes, or sign as the
//! cluster; kubeadm keeps the CA key where it needs it
//! (`/etc/kubernetes/pki/ca.key` on control-plane nodes), and nowhere else
//! needs any of them once the node is a member.
//!
//! The contract, in [`after_join`], run each time the stage ends done:
//! - node-init's config files (`/etc/node-init/config.yaml`,
//!   `config.d/*.yaml`): each of `kubernetes.token`, `certificate_key` and
//!   `ca.key` they hold reads [`SCRUBBED`]; every other key stays, so
//!   `status`, `config`, `verify` and a later `run` load the same
//!   configuration, as [`Member::Joined`](crate::config::Member::Joined).
//! - cloud-init's copies of the user data (`user-data.txt*` under
//!   `/var/lib/cloud/instance/` and every `/var/lib/cloud/instances/<id>/`):
//!   the same keys in the `node_init:` key and in `write_files` of
//!   node-init's config paths; other text holding a value node-init knows
//!   has it replaced. A copy still holding material after that fails the
//!   stage, naming the file.
//! - the rendered kubeadm config: the token and certificate key replaced.
//!
//! Files keep their mode and owner and are replaced atomically, the
//! kubeadm config first, then the later layers first (a crash in between leaves some keys scrubbed, which
//! loads as `Joined` all the same). The log and the stage's details name
//! each file and key, never a value.

use std::os::unix::fs::MetadataExt as _;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::config::values::SCRUBBED;
use crate::config::{
    CONFIG_DIR, CONFIG_PATH, Kubernetes, Member, gunzip_if_compressed, user_data_layers, write_files_content,
};
use crate::stages::{Context, Details};

/// The secret keys of the join material, as paths in a config document.
pub const KEYS: [&[&str]; 3] =
    [&["kubernetes", "token"], &["kubernetes", "certificate_key"], &["kubernetes", "ca", "key"]];

const CLOUD: &str = "/var/lib/cloud";
const USER_DATA_FILES: [&str; 2] = ["user-data.txt", "user-data.txt.i"];

/// Sets each secret key `doc` holds to [`SCRUBBED`]; the keys it changed,
/// dotted.
pub fn scrub_doc(doc: &mut Value) -> Vec<String> {
    let mut changed = Vec::new();
    for path in KEYS {
        let (last, parents) = path.split_last().expect("a key path is not empty");
        let slot = parents.iter().try_fold(&mut *doc, |v, k| v.get_mut(*k)).and_then(|v| v.get_mut(*last));
        if let Some(v) = slot.filter(|v| !v.is_null() && v.as_str() != Some(SCRUBBED)) {
            *v = Value::String(SCRUBBED.to_owned());
            changed.push(path.join("."));
        }
    }
    changed
}

/// A node-init config file's text with its join material scrubbed, and
/// the keys scrubbed; `None` when it holds none.
pub fn scrub_config_text(text: &str, origin: &str) -> Result<Option<(String, Vec<String>)>> {
    let mut doc = crate::config::parse_yaml_value(text, origin)?;
    let changed = scrub_doc(&mut doc);
    if changed.is_empty() {
        return Ok(None);
    }
    Ok(Some((format!("{HEADER}{}", yaml(&doc)?), changed)))
}

const HEADER: &str = "# The join material (kubernetes.token, certificate_key, ca.key) reads `scrubbed`:\n\
                      # node-init removed it after this node joined the cluster.\n";

fn yaml(doc: &Value) -> Result<String> {
    serde_saphyr::to_string(doc).context("rendering YAML")
}

/// A `#cloud-config` document with the join material scrubbed from its
/// `node_init:` key and its `write_files` of node-init's config paths;
/// `None` when it holds none.
pub fn scrub_cloud_config(text: &str, origin: &str) -> Result<Option<(String, Vec<String>)>> {
    let mut doc = crate::config::parse_yaml_value(text, origin)?;
    let mut changed: Vec<String> = doc
        .get_mut("node_init")
        .map(scrub_doc)
        .unwrap_or_default()
        .into_iter()
        .map(|k| format!("node_init.{k}"))
        .collect();
    let ours = |p: &str| p == CONFIG_PATH || (p.starts_with(CONFIG_DIR) && p.ends_with(".yaml"));
    for entry in doc.get_mut("write_files").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(path) = entry.get("path").and_then(Value::as_str).filter(|p| ours(p)).map(str::to_owned) else {
            continue;
        };
        let content = write_files_content(entry).with_context(|| format!("{origin}: write_files {path}"))?;
        let Some((text, keys)) = scrub_config_text(&content, &path)? else { continue };
        if let Some(m) = entry.as_object_mut() {
            m.remove("encoding");
            m.insert("content".into(), Value::String(text));
        }
        changed.extend(keys.into_iter().map(|k| format!("write_files {path}: {k}")));
    }
    if changed.is_empty() {
        return Ok(None);
    }
    Ok(Some((format!("#cloud-config\n{HEADER}{}", yaml(&doc)?), changed)))
}

/// Removes the join material from node-init's config files, cloud-init's
/// copies of the user data and the rendered kubeadm config (see the
/// module's doc); each file scrubbed goes into `details.scrubbed`.
pub fn after_join(cx: &Context<'_>, k: &Kubernetes, details: &mut Details) -> Result<()> {
    let values = known_values(k);
    let mut done = Vec::new();
    // First the file only this run's values or its layout can scrub: a
    // rerun after a crash may load the config as `Joined` already.
    if let Some(text) = cx.root.read_string_opt(super::KUBEADM_CONFIG)? {
        let new = scrub_kubeadm_config(&values.iter().fold(text.clone(), |t, v| t.replace(v.as_str(), SCRUBBED)));
        if new != text {
            replace(cx, super::KUBEADM_CONFIG, new.as_bytes())?;
            done.push(format!("{}: the token and certificate key", super::KUBEADM_CONFIG));
        }
    }
    for path in user_data_copies(cx)? {
        if let Some(keys) = scrub_user_data(cx, &path, &values)? {
            done.push(format!("{path}: {}", keys.join(", ")));
        }
    }
    for path in crate::config::config_files(cx.root).iter().rev() {
        let Some(text) = cx.root.read_string_opt(path)? else { continue };
        if let Some((new, keys)) = scrub_config_text(&text, path)? {
            replace(cx, path, new.as_bytes())?;
            done.push(format!("{path}: {}", keys.join(", ")));
        }
    }
    for line in &done {
        tracing::info!(file = %line, "scrubbed the join material");
    }
    if !done.is_empty() {
        details.insert("scrubbed".into(), done.into());
    }
    Ok(())
}

/// The kubeadm config node-init rendered (see `render`), with the value
/// of every key that holds the token or the certificate key scrubbed.
pub fn scrub_kubeadm_config(text: &str) -> String {
    const KEYS: [&str; 3] = ["token", "tlsBootstrapToken", "certificateKey"];
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_start().trim_start_matches("- ");
        let secret = body.split_once(": ").filter(|(key, _)| KEYS.contains(key));
        match secret {
            Some((key, value)) if value.trim() != SCRUBBED => {
                let indent = &line[..line.len() - body.len()];
                out.push_str(&format!("{indent}{key}: {SCRUBBED}\n"));
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// The secret values this run knows, longest first so that a token goes
/// before its secret half: for text that is no config document.
fn known_values(k: &Kubernetes) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(t) = k.token() {
        v.push(t.expose());
        v.push(t.secret.expose().clone());
    }
    if let Some(c) = k.certificate_key() {
        v.push(c.0.expose().clone());
    }
    if let Member::Init { ca, .. } = &k.member {
        let pem = ca.key.0.expose();
        v.push(pem.clone());
        v.extend(pem.lines().map(str::trim).filter(|l| l.len() >= 16 && !l.starts_with("-----")).map(str::to_owned));
    }
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v
}

/// cloud-init's copies of the user data, each file once (`instance` is
/// a link to one of `instances/<id>`).
fn user_data_copies(cx: &Context<'_>) -> Result<Vec<String>> {
    let mut dirs = vec![format!("{CLOUD}/instance")];
    if let Ok(entries) = std::fs::read_dir(cx.root.path(format!("{CLOUD}/instances"))) {
        let mut ids: Vec<String> =
            entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        ids.sort();
        dirs.extend(ids.into_iter().map(|id| format!("{CLOUD}/instances/{id}")));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for dir in dirs {
        for name in USER_DATA_FILES {
            let path = format!("{dir}/{name}");
            let Ok(real) = std::fs::canonicalize(cx.root.path(&path)) else { continue };
            if seen.insert(real) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// One copy of the user data scrubbed; the keys (or "text") it changed.
fn scrub_user_data(cx: &Context<'_>, path: &str, values: &[String]) -> Result<Option<Vec<String>>> {
    let Some(raw) = cx.root.read_opt(path)? else { return Ok(None) };
    let Ok(text) = gunzip_if_compressed(&raw).map_err(drop).and_then(|b| String::from_utf8(b).map_err(drop)) else {
        return Ok(None);
    };
    let scrubbed =
        if text.starts_with("#cloud-config") { scrub_cloud_config(&text, path)? } else { scrub_mime(&text, path)? };
    let (mut new, mut keys) = scrubbed.unwrap_or_else(|| (text.clone(), Vec::new()));
    let replaced = values.iter().fold(new.clone(), |t, v| t.replace(v.as_str(), SCRUBBED));
    if replaced != new {
        new = replaced;
        keys.push("the values in its text".into());
    }
    if let Some(key) = material_left(new.as_bytes(), path) {
        bail!(
            "scrubbing {path}: {key} is still there in a form node-init cannot rewrite (encoded MIME part?); \
             remove the join material from it by hand"
        );
    }
    if keys.is_empty() {
        return Ok(None);
    }
    replace(cx, path, new.as_bytes())?;
    Ok(Some(keys))
}

/// MIME multipart user data (cloud-init's `user-data.txt.i` is one) with
/// each `#cloud-config` part scrubbed in place, re-encoded as it was
/// (7bit, 8bit or base64); `None` when no part held material.
pub fn scrub_mime(text: &str, origin: &str) -> Result<Option<(String, Vec<String>)>> {
    use base64::Engine as _;
    use mailparse::body::Body;
    let head = text.get(..text.len().min(4096)).unwrap_or(text).to_ascii_lowercase();
    if !head.contains("content-type: multipart/") && !head.starts_with("mime-version:") {
        return Ok(None);
    }
    let Ok(mail) = mailparse::parse_mail(text.as_bytes()) else { return Ok(None) };
    let mut out = text.to_owned();
    let mut changed = Vec::new();
    for part in mail.parts().filter(|p| p.subparts.is_empty()) {
        let Ok(body) = part.get_body_raw().map(String::from_utf8) else { continue };
        let Ok(body) = body else { continue };
        let cloud_config =
            part.ctype.mimetype.eq_ignore_ascii_case("text/cloud-config") || body.starts_with("#cloud-config");
        if !cloud_config {
            continue;
        }
        let Some((new, keys)) = scrub_cloud_config(&body, origin)? else { continue };
        let (raw, encoded) = match part.get_body_encoded() {
            Body::SevenBit(b) | Body::EightBit(b) => (b.get_raw(), new),
            Body::Binary(b) => (b.get_raw(), new),
            Body::Base64(b) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(new.as_bytes());
                let lines: Vec<&str> =
                    b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
                (b.get_raw(), lines.join("\n") + "\n")
            }
            // Left to the check that follows, which names the file.
            Body::QuotedPrintable(_) => continue,
        };
        let raw = String::from_utf8_lossy(raw).into_owned();
        if raw.is_empty() || !out.contains(&raw) {
            continue;
        }
        out = out.replacen(&raw, &encoded, 1);
        changed.extend(keys.into_iter().map(|k| format!("MIME part: {k}")));
    }
    Ok((!changed.is_empty()).then_some((out, changed)))
}

/// A secret key node-init would read from user data `bytes`, if any is
/// left unscrubbed.
fn material_left(bytes: &[u8], origin: &str) -> Option<String> {
    let layers = user_data_layers(bytes, origin, &|_: &str| false).ok()?;
    layers.iter().find_map(|l| {
        KEYS.iter().find_map(|path| {
            let v = path.iter().try_fold(&l.value, |v, k| v.get(*k))?;
            (!v.is_null() && v.as_str() != Some(SCRUBBED)).then(|| format!("{} ({})", path.join("."), l.name))
        })
    })
}

/// Writes `content` over `path` atomically, keeping its mode and owner.
fn replace(cx: &Context<'_>, path: &str, content: &[u8]) -> Result<()> {
    let meta = std::fs::metadata(cx.root.path(path)).with_context(|| format!("reading {path}"))?;
    cx.write(path, content, meta.mode() & 0o7777)?;
    if !cx.dry_run {
        std::os::unix::fs::chown(cx.root.path(path), Some(meta.uid()), Some(meta.gid()))
            .with_context(|| format!("keeping the owner of {path}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
