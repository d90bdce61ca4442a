//! Where the configuration comes from.
//!
//! `--config FILE` (a host path) alone; else the layers under the root:
//! `/etc/node-init/config.yaml`, `/etc/node-init/config.d/*.yaml`, then
//! cloud-init's user data (plain `#cloud-config`, gzip, or MIME multipart):
//! its `write_files` of those paths and its `node_init:` key. None at all:
//! defaults.
//! Reading is split from decoding so the decoders are tested on bytes.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::layers::{Layer, Merged, merge};
use super::{Config, ConfigError, from_value, parse_yaml_value};
use crate::root::Root;

pub const CONFIG_PATH: &str = "/etc/node-init/config.yaml";
/// Further layers, read in name order after `CONFIG_PATH`.
pub const CONFIG_DIR: &str = "/etc/node-init/config.d";
/// The layer `node-init userdata` writes.
pub const USERDATA_LAYER: &str = "/etc/node-init/config.d/50-userdata.yaml";
pub const USER_DATA_PATH: &str = "/var/lib/cloud/instance/user-data.txt";

/// User data larger than this after decompression is refused (a gzip bomb
/// must not exhaust a node's memory at first boot).
const MAX_USER_DATA: u64 = 16 << 20;

/// The configuration, and where each of its keys came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The layers read, in order (empty: built-in defaults).
    pub layers: Vec<String>,
    pub merged: Merged,
}

impl Loaded {
    /// The layers, for a log line.
    pub fn origin(&self) -> String {
        if self.layers.is_empty() { "built-in defaults".to_owned() } else { self.layers.join(", ") }
    }
}

fn config_error(origin: &str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { origin: origin.to_owned(), key: key.to_owned(), message: message.into() }
}

/// Finds, reads, merges and validates the configuration. `--config FILE`
/// stands alone; otherwise the layers in order (see [`super::layers`]).
pub fn load(root: &Root, explicit: Option<&Path>) -> Result<Loaded> {
    let layers = match explicit {
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| config_error(&origin, "(file)", format!("cannot read: {e}")))?;
            vec![Layer { value: parse_yaml_value(&text, &origin)?, name: origin }]
        }
        None => node_layers(root)?,
    };
    Ok(merged(layers)?)
}

/// Merges and validates `layers`; an error names the layer the key came from.
pub fn merged(layers: Vec<Layer>) -> Result<Loaded, ConfigError> {
    for l in &layers {
        if !matches!(l.value, serde_json::Value::Object(_) | serde_json::Value::Null) {
            return Err(config_error(&l.name, "(top level)", "expected a mapping"));
        }
    }
    let merged = merge(&layers);
    let names: Vec<String> = layers.into_iter().map(|l| l.name).collect();
    let all = if names.is_empty() { "built-in defaults".to_owned() } else { names.join(" + ") };
    let config = from_value(merged.value.clone(), &all).map_err(|mut e| {
        if names.len() > 1 {
            e.origin = merged.layer_of(&e.key).map_or_else(|| all.clone(), str::to_owned);
        }
        e
    })?;
    Ok(Loaded { config, layers: names, merged })
}

/// node-init's own config files in the order they are layered: the
/// image's file when it exists, then `config.d` in name order.
pub fn config_files(root: &Root) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    if root.exists(CONFIG_PATH) {
        paths.push(CONFIG_PATH.to_owned());
    }
    if let Ok(entries) = std::fs::read_dir(root.path(CONFIG_DIR)) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") && !n.starts_with('.'))
            .collect();
        names.sort();
        paths.extend(names.into_iter().map(|n| format!("{CONFIG_DIR}/{n}")));
    }
    paths
}

/// The image's file, `config.d` in name order, then the user data.
fn node_layers(root: &Root) -> Result<Vec<Layer>> {
    let paths = config_files(root);
    let mut layers = Vec::new();
    for p in &paths {
        let name = root.path(p).display().to_string();
        let text = root.read_string_opt(p)?.unwrap_or_default();
        layers.push(Layer { value: parse_yaml_value(&text, &name)?, name });
    }
    if let Some(bytes) = root.read_opt(USER_DATA_PATH)? {
        let origin = root.path(USER_DATA_PATH).display().to_string();
        // Files cloud-init has already written are read from the disk above.
        let on_disk = |path: &str| root.exists(path);
        layers.extend(user_data_layers(&bytes, &origin, &on_disk)?);
    }
    Ok(layers)
}

/// The `node_init:` section of cloud-init user data, validated alone, or
/// `None` when the user data has none (nor a `write_files` of node-init's
/// config).
#[cfg(test)]
fn from_user_data(bytes: &[u8], origin: &str) -> Result<Option<Config>, ConfigError> {
    let layers = user_data_layers(bytes, origin, &|_: &str| false)?;
    if layers.is_empty() {
        return Ok(None);
    }
    merged(layers).map(|l| Some(l.config))
}

/// node-init's layers in user data: `write_files` of its config paths (what
/// `node-init userdata` renders; cloud-init writes them before node-init
/// starts, but an image configured with `--root` has only the user data),
/// then the `node_init:` key.
pub(crate) fn user_data_layers(
    bytes: &[u8],
    origin: &str,
    on_disk: &dyn Fn(&str) -> bool,
) -> Result<Vec<Layer>, ConfigError> {
    let Some(cloud_config) =
        cloud_config_text(bytes).map_err(|e| config_error(origin, "(user data)", format!("{e:#}")))?
    else {
        return Ok(Vec::new());
    };
    #[derive(Deserialize)]
    struct UserData {
        node_init: Option<serde_json::Value>,
        #[serde(default)]
        write_files: Vec<serde_json::Value>,
    }
    let doc = parse_yaml_value(&cloud_config, origin)?;
    let ud: UserData = serde_json::from_value(doc)
        .map_err(|_| config_error(origin, "(user data)", "a #cloud-config document is a mapping"))?;
    let mut layers = Vec::new();
    let ours = |p: &str| p == CONFIG_PATH || (p.starts_with(CONFIG_DIR) && p.ends_with(".yaml"));
    let mut files: Vec<(&str, &serde_json::Value)> = ud
        .write_files
        .iter()
        .filter_map(|f| Some((f.get("path")?.as_str()?, f)))
        .filter(|(p, _)| ours(p) && !on_disk(p))
        .collect();
    // The order node-init reads the files from the disk in.
    files.sort_by_key(|(p, _)| (*p != CONFIG_PATH, p.to_string()));
    for (path, entry) in files {
        let name = format!("{origin} (write_files {path})");
        let text = write_files_content(entry).map_err(|e| config_error(&name, "(user data)", format!("{e:#}")))?;
        layers.push(Layer { value: parse_yaml_value(&text, &name)?, name });
    }
    if let Some(v) = ud.node_init {
        layers.push(Layer { name: format!("{origin} (node_init key)"), value: v });
    }
    Ok(layers)
}

/// A `write_files` entry's content, decoded as cloud-init does for the
/// encodings it accepts.
pub(crate) fn write_files_content(entry: &serde_json::Value) -> Result<String> {
    use base64::Engine;
    let content = entry.get("content").and_then(|c| c.as_str()).unwrap_or_default();
    let encoding = entry.get("encoding").and_then(|c| c.as_str()).unwrap_or("text/plain").to_ascii_lowercase();
    let b64 = || {
        base64::engine::general_purpose::STANDARD
            .decode(content.split_whitespace().collect::<String>())
            .context("content is not base64")
    };
    let bytes = match encoding.as_str() {
        "text/plain" => content.as_bytes().to_vec(),
        "b64" | "base64" => b64()?,
        "gz" | "gzip" => gunzip_if_compressed(content.as_bytes())?,
        "gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64" => gunzip_if_compressed(&b64()?)?,
        other => anyhow::bail!("unknown write_files encoding {other:?}"),
    };
    String::from_utf8(bytes).context("content is not UTF-8")
}

/// The text of the `#cloud-config` document in user data: gunzipped if
/// compressed, found among the parts if MIME multipart.
fn cloud_config_text(bytes: &[u8]) -> Result<Option<String>> {
    let bytes = gunzip_if_compressed(bytes)?;
    let text = String::from_utf8(bytes).context("user data is not UTF-8")?;
    if text.starts_with("#cloud-config") {
        return Ok(Some(text));
    }
    if !looks_like_mime(&text) {
        return Ok(None);
    }
    let mail = mailparse::parse_mail(text.as_bytes()).context("parsing MIME multipart user data")?;
    for part in mail.parts() {
        if !part.subparts.is_empty() {
            continue;
        }
        let body = gunzip_if_compressed(&part.get_body_raw().context("decoding a MIME part")?)?;
        let ctype = part.ctype.mimetype.to_ascii_lowercase();
        let is_cloud_config = ctype == "text/cloud-config" || body.starts_with(b"#cloud-config");
        if is_cloud_config {
            return String::from_utf8(body).map(Some).context("the cloud-config part is not UTF-8");
        }
    }
    Ok(None)
}

fn looks_like_mime(text: &str) -> bool {
    let head = text.get(..text.len().min(4096)).unwrap_or(text).to_ascii_lowercase();
    head.contains("content-type: multipart/") || head.starts_with("mime-version:")
}

pub(crate) fn gunzip_if_compressed(bytes: &[u8]) -> Result<Vec<u8>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_USER_DATA + 1)
        .read_to_end(&mut out)
        .context("decompressing gzip user data")?;
    anyhow::ensure!(
        out.len() as u64 <= MAX_USER_DATA,
        "user data is larger than {MAX_USER_DATA} bytes once decompressed"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const DOC: &str = "#cloud-config\npackages: [curl]\nruncmd:\n  - [echo, hi]\nusers:\n  - name: ubuntu\n    groups: [sudo]\nnode_init:\n  dns:\n    domain: lab\n";

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn plain_cloud_config_ignores_other_keys() {
        let c = from_user_data(DOC.as_bytes(), "ud").unwrap().unwrap();
        assert_eq!(c.dns.domain.as_str(), "lab");
    }

    #[test]
    fn gzip_cloud_config() {
        let c = from_user_data(&gz(DOC.as_bytes()), "ud").unwrap().unwrap();
        assert_eq!(c.dns.domain.as_str(), "lab");
    }

    #[test]
    fn mime_multipart_finds_the_cloud_config_part() {
        let mime = format!(
            "Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--XX\nContent-Type: text/cloud-config\nContent-Transfer-Encoding: 7bit\n\n{DOC}\n--XX--\n"
        );
        let c = from_user_data(mime.as_bytes(), "ud").unwrap().unwrap();
        assert_eq!(c.dns.domain.as_str(), "lab");
    }

    #[test]
    fn user_data_without_the_key_is_none() {
        assert!(from_user_data(b"#cloud-config\npackages: [curl]\n", "ud").unwrap().is_none());
        assert!(from_user_data(b"#!/bin/sh\necho hi\n", "ud").unwrap().is_none());
    }

    #[test]
    fn write_files_of_the_config_path_is_read_plain_base64_or_gzipped() {
        use base64::Engine;
        let config = "dns:\n  domain: lab\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(config);
        let gzb64 = base64::engine::general_purpose::STANDARD.encode(gz(config.as_bytes()));
        for (encoding, content) in
            [("text/plain", serde_json::to_string(config).unwrap()), ("b64", b64), ("gz+b64", gzb64)]
        {
            let ud = format!(
                "#cloud-config\nwrite_files:\n- path: /etc/other\n  content: x\n- path: {CONFIG_PATH}\n  \
                 encoding: {encoding}\n  content: {content}\n"
            );
            let c = from_user_data(ud.as_bytes(), "ud").unwrap().unwrap_or_else(|| panic!("{encoding}: not found"));
            assert_eq!(c.dns.domain.as_str(), "lab", "{encoding}");
        }
        let bad =
            format!("#cloud-config\nwrite_files:\n- path: {CONFIG_PATH}\n  content: \"dns: {{domain: 'a b'}}\"\n");
        let err = from_user_data(bad.as_bytes(), "ud").unwrap_err();
        assert!(err.to_string().contains("(write_files /etc/node-init/config.yaml)"), "{err}");
        assert_eq!(err.key, "dns.domain");
    }
}

#[cfg(test)]
mod layered {
    use super::*;

    fn root(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path()).unwrap();
        for (p, c) in files {
            r.write(p, c.as_bytes(), 0o600).unwrap();
        }
        (t, r)
    }

    #[test]
    fn the_image_file_config_d_and_user_data_layer_in_order() {
        let (_t, r) = root(&[
            (CONFIG_PATH, "dns: {domain: dc1, nameservers: [10.0.0.2, 10.0.0.3]}\nos: {patch: true}\n"),
            ("/etc/node-init/config.d/20-site.yaml", "dns: {nameservers: [10.0.0.9]}\n"),
            ("/etc/node-init/config.d/10-early.yaml", "dns: {domain: early}\n"),
            (USER_DATA_PATH, "#cloud-config\nnode_init:\n  os: {reboot: never}\n"),
        ]);
        let l = load(&r, None).unwrap();
        assert_eq!(l.config.dns.domain.as_str(), "early", "config.d overrides the image's file");
        assert_eq!(l.config.dns.nameservers.len(), 1, "a later list replaces an earlier one");
        assert!(l.config.os.patch, "keys the later layers leave alone stay");
        assert_eq!(l.config.os.reboot, crate::config::RebootPolicy::Never);
        assert_eq!(l.layers.len(), 4);
        assert!(l.layers[1].ends_with("10-early.yaml") && l.layers[2].ends_with("20-site.yaml"), "{:?}", l.layers);
    }

    #[test]
    fn an_error_names_the_file_the_bad_key_came_from() {
        let (_t, r) = root(&[
            (CONFIG_PATH, "dns: {domain: dc1}\n"),
            ("/etc/node-init/config.d/50-userdata.yaml", "dns: {timeout: soon}\n"),
        ]);
        let e = load(&r, None).unwrap_err();
        let e = e.downcast_ref::<ConfigError>().unwrap();
        assert_eq!(e.key, "dns.timeout");
        assert!(e.origin.ends_with("/etc/node-init/config.d/50-userdata.yaml"), "{}", e.origin);
    }

    #[test]
    fn write_files_already_on_disk_are_not_read_twice() {
        let ud =
            format!("#cloud-config\nwrite_files:\n- path: {USERDATA_LAYER}\n  content: \"dns: {{domain: lab}}\"\n");
        let (_t, r) = root(&[(USER_DATA_PATH, ud.as_str())]);
        let l = load(&r, None).unwrap();
        assert_eq!(l.config.dns.domain.as_str(), "lab", "under --root the user data's file is read");
        r.write(USERDATA_LAYER, b"dns: {domain: lab}\n", 0o600).unwrap();
        let l = load(&r, None).unwrap();
        assert_eq!(l.layers.len(), 1, "{:?}", l.layers);
    }
}
