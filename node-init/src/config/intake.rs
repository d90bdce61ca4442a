//! Where the configuration comes from.
//!
//! In order: `--config FILE` (a host path), `/etc/node-init/config.yaml`
//! under the root, the `node_init:` key of cloud-init's user data under the
//! root (plain `#cloud-config`, gzip, or MIME multipart), else defaults.
//! Reading is split from decoding so the decoders are tested on bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::{Config, ConfigError, from_value, parse, parse_yaml_value};
use crate::root::Root;

pub const CONFIG_PATH: &str = "/etc/node-init/config.yaml";
pub const USER_DATA_PATH: &str = "/var/lib/cloud/instance/user-data.txt";

/// User data larger than this after decompression is refused (a gzip bomb
/// must not exhaust a node's memory at first boot).
const MAX_USER_DATA: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    UserData(PathBuf),
    Defaults,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::UserData(p) => write!(f, "{} (node_init key)", p.display()),
            Self::Defaults => f.write_str("built-in defaults"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub origin: Origin,
}

fn config_error(origin: &str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { origin: origin.to_owned(), key: key.to_owned(), message: message.into() }
}

/// Finds, reads and validates the configuration.
pub fn load(root: &Root, explicit: Option<&Path>) -> Result<Loaded> {
    if let Some(path) = explicit {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| config_error(&origin, "(file)", format!("cannot read: {e}")))?;
        return Ok(Loaded { config: parse(&text, &origin)?, origin: Origin::File(path.to_owned()) });
    }
    if let Some(text) = root.read_string_opt(CONFIG_PATH)? {
        let origin = root.path(CONFIG_PATH);
        return Ok(Loaded { config: parse(&text, &origin.display().to_string())?, origin: Origin::File(origin) });
    }
    if let Some(bytes) = root.read_opt(USER_DATA_PATH)? {
        let path = root.path(USER_DATA_PATH);
        let origin_s = format!("{} (node_init key)", path.display());
        if let Some(config) = from_user_data(&bytes, &origin_s)? {
            return Ok(Loaded { config, origin: Origin::UserData(path) });
        }
    }
    Ok(Loaded { config: Config::default(), origin: Origin::Defaults })
}

/// The `node_init:` section of cloud-init user data, or `None` when the
/// user data has no cloud-config part or no such key.
pub fn from_user_data(bytes: &[u8], origin: &str) -> Result<Option<Config>, ConfigError> {
    let Some(cloud_config) =
        cloud_config_text(bytes).map_err(|e| config_error(origin, "(user data)", format!("{e:#}")))?
    else {
        return Ok(None);
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
    if let Some(v) = ud.node_init {
        return from_value(v, origin).map(Some);
    }
    // What `node-init userdata` renders: cloud-init writes the file before
    // node-init starts, but an image configured with `--root` has only the
    // user data.
    let Some(entry) = ud.write_files.iter().find(|f| f.get("path").and_then(|p| p.as_str()) == Some(CONFIG_PATH))
    else {
        return Ok(None);
    };
    let origin = format!("{origin} (write_files {CONFIG_PATH})");
    let text = write_files_content(entry).map_err(|e| config_error(&origin, "(user data)", format!("{e:#}")))?;
    parse(&text, &origin).map(Some)
}

/// A `write_files` entry's content, decoded as cloud-init does for the
/// encodings it accepts.
fn write_files_content(entry: &serde_json::Value) -> Result<String> {
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

fn gunzip_if_compressed(bytes: &[u8]) -> Result<Vec<u8>> {
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
