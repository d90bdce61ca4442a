//! What MAAS gave the node and how node-init talks back to it.
//!
//! curtin writes cloud-init's MAAS settings under `/etc/cloud/cloud.cfg.d/`:
//! the datasource (`90_maas_cloud_config.cfg`: the metadata URL and the
//! node's OAuth tokens) and the reporting webhook
//! (`90_maas_cloud_init_reporting.cfg`: MAAS's status endpoint for this
//! machine, with the same tokens). They are read here, under the root, into
//! an [`Endpoint`] whose tokens never reach a message. `oauth` signs,
//! `http` sends with a deadline and learns the server's clock, `events`
//! is what node-init reports and how it is kept until MAAS has it; `api`
//! is the region API an operator's `up` and `down` drive.

pub mod api;
pub mod events;
pub mod http;
pub mod oauth;

use std::fmt;

use anyhow::{Context as _, Result, anyhow, bail};

use self::oauth::ApiKey;
use crate::root::Root;

pub const CLOUD_CFG_DIR: &str = "/etc/cloud/cloud.cfg.d";
/// The reporting webhook curtin writes (MAAS's `get_cloud_init_reporting`).
pub const REPORTING_CFG: &str = "/etc/cloud/cloud.cfg.d/90_maas_cloud_init_reporting.cfg";
/// The datasource curtin writes (MAAS's `get_curtin_cloud_config`).
pub const DATASOURCE_CFG: &str = "/etc/cloud/cloud.cfg.d/90_maas_cloud_config.cfg";

/// A MAAS URL and the node's credentials for it.
pub struct Endpoint {
    pub url: url::Url,
    pub key: ApiKey,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({}, <redacted>)", self.url)
    }
}

/// The status endpoint from `90_maas_cloud_init_reporting.cfg`
/// (`reporting.maas`, a webhook); `None` when the file is absent: not a
/// MAAS-deployed node, or an image not yet deployed.
pub fn reporting(root: &Root) -> Result<Option<Endpoint>> {
    let Some(v) = cloud_cfg(root, REPORTING_CFG)? else { return Ok(None) };
    let Some(maas) = v.pointer("/reporting/maas") else {
        bail!("{REPORTING_CFG} has no reporting.maas key");
    };
    let kind = maas.get("type").and_then(|t| t.as_str()).unwrap_or_default();
    if kind != "webhook" {
        bail!("{REPORTING_CFG}: reporting.maas.type is {kind:?}, expected webhook");
    }
    endpoint(maas, "endpoint", REPORTING_CFG, "reporting.maas").map(Some)
}

/// The metadata URL and tokens from `90_maas_cloud_config.cfg`
/// (`datasource.MAAS`); `None` when the file is absent.
pub fn datasource(root: &Root) -> Result<Option<Endpoint>> {
    let Some(v) = cloud_cfg(root, DATASOURCE_CFG)? else { return Ok(None) };
    let Some(ds) = v.pointer("/datasource/MAAS") else {
        bail!("{DATASOURCE_CFG} has no datasource.MAAS key");
    };
    endpoint(ds, "metadata_url", DATASOURCE_CFG, "datasource.MAAS").map(Some)
}

/// A cloud-config file as a value; the parser's message is left out, as
/// it may quote a token.
fn cloud_cfg(root: &Root, path: &str) -> Result<Option<serde_json::Value>> {
    let Some(text) = root.read_string_opt(path)? else { return Ok(None) };
    let v = serde_saphyr::from_str(&text).ok().with_context(|| format!("{path} is not valid YAML"))?;
    Ok(Some(v))
}

/// `url_key` and the three tokens under `at`. MAAS issues an empty
/// consumer secret and writes none; one given is not supported.
fn endpoint(v: &serde_json::Value, url_key: &str, path: &str, at: &str) -> Result<Endpoint> {
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .filter(|x| !x.is_empty())
            .with_context(|| format!("{path}: {at}.{k} is missing"))
    };
    let url = field(url_key)?;
    let url = url::Url::parse(url).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    let url = url.with_context(|| format!("{path}: {at}.{url_key} is not an http(s) URL"))?;
    if v.get("consumer_secret").and_then(|x| x.as_str()).is_some_and(|s| !s.is_empty()) {
        bail!("{path}: {at}.consumer_secret is set; MAAS issues none and node-init signs without one");
    }
    let key = ApiKey::new(field("consumer_key")?, field("token_key")?, field("token_secret")?)
        .map_err(|why| anyhow::anyhow!("{path}: {at}: {why}"))?;
    Ok(Endpoint { url, key })
}

/// `datasource.MAAS.metadata_url` from the first `90_*maas*.cfg` that has
/// one (curtin's `90_maas_cloud_config.cfg`, or a packaged
/// `90_dpkg_maas.cfg`), as the node's facts find the MAAS server.
pub fn metadata_url(root: &Root) -> Result<Option<url::Url>> {
    let Ok(entries) = std::fs::read_dir(root.path(CLOUD_CFG_DIR)) else { return Ok(None) };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("90_") && n.contains("maas") && n.ends_with(".cfg"))
        .collect();
    names.sort();
    for name in names {
        let path = format!("{CLOUD_CFG_DIR}/{name}");
        let Some(text) = root.read_string_opt(&path)? else { continue };
        let Ok(v) = serde_saphyr::from_str::<serde_json::Value>(&text) else { continue };
        let Some(url) = v.pointer("/datasource/MAAS/metadata_url").and_then(|u| u.as_str()) else { continue };
        let url = url::Url::parse(url).map_err(|e| anyhow!("{path}: metadata_url {url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("{path}: metadata_url {url} is not an http(s) URL");
        }
        return Ok(Some(url));
    }
    Ok(None)
}

/// The MAAS server's host, from the metadata URL; a node whose MAAS files
/// are unreadable simply has none (NO_PROXY then lists no MAAS server).
pub fn server_host(root: &Root) -> Result<Option<String>> {
    Ok(metadata_url(root).ok().flatten().and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: &str =
        "    consumer_key: Cq7consumer\n    token_key: Tk9tokenkey\n    token_secret: Sx3tokensecret\n";

    fn root() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        (t, root)
    }

    #[test]
    fn host_of_the_metadata_url() {
        let (_t, root) = root();
        let cfg = "datasource:\n  MAAS:\n    consumer_key: ck\n    metadata_url: http://10.11.12.2:5248/MAAS/metadata/\n    token_key: tk\n    token_secret: ts\n";
        root.write("/etc/cloud/cloud.cfg.d/90_dpkg_maas.cfg", cfg.as_bytes(), 0o600).unwrap();
        assert_eq!(server_host(&root).unwrap().as_deref(), Some("10.11.12.2"));
    }

    #[test]
    fn the_files_curtin_writes_give_the_endpoints() {
        let (_t, root) = root();
        assert!(reporting(&root).unwrap().is_none() && datasource(&root).unwrap().is_none());
        // As MAAS's preseed.py writes them: "#cloud-config\n" + yaml.safe_dump.
        let reporting_cfg = format!(
            "#cloud-config\nreporting:\n  maas:\n{TOKENS}    endpoint: http://10.0.0.2:5248/MAAS/metadata/status/abc123\n    type: webhook\n"
        );
        root.write(REPORTING_CFG, reporting_cfg.as_bytes(), 0o600).unwrap();
        let ds = format!(
            "#cloud-config\ndatasource:\n  MAAS:\n{TOKENS}    metadata_url: http://10.0.0.2:5248/MAAS/metadata/\n"
        );
        root.write(DATASOURCE_CFG, ds.as_bytes(), 0o600).unwrap();
        let r = reporting(&root).unwrap().unwrap();
        assert_eq!(r.url.as_str(), "http://10.0.0.2:5248/MAAS/metadata/status/abc123");
        assert!(r.key.header().contains("oauth_token=\"Tk9tokenkey\""));
        assert_eq!(datasource(&root).unwrap().unwrap().url.path(), "/MAAS/metadata/");
        assert!(!format!("{r:?}").contains("Sx3"), "{r:?}");
    }

    #[test]
    fn a_broken_file_is_an_error_that_names_the_key_and_never_a_token() {
        let (_t, root) = root();
        for (cfg, why) in [
            (format!("reporting:\n  maas:\n{TOKENS}    type: webhook\n"), "reporting.maas.endpoint is missing"),
            (format!("reporting:\n  maas:\n{TOKENS}    type: log\n"), "expected webhook"),
            ("reporting: {maas: {type: webhook, endpoint: 'ftp://x/'}}\n".to_owned(), "is not an http(s) URL"),
            ("reporting: [Sx3tokensecret\n".to_owned(), "is not valid YAML"),
        ] {
            root.write(REPORTING_CFG, cfg.as_bytes(), 0o600).unwrap();
            let e = format!("{:#}", reporting(&root).unwrap_err());
            assert!(e.contains(why) && e.contains(REPORTING_CFG), "{e}");
            assert!(!e.contains("Sx3") && !e.contains("Tk9"), "{e}");
        }
    }
}
