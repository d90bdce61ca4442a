//! Facts MAAS already gave the node, read from cloud-init's MAAS datasource
//! config (`/etc/cloud/cloud.cfg.d/90_*maas*.cfg`): the metadata URL, whose
//! host is the MAAS server. The OAuth tokens in the same file are never read
//! into node-init's own structures. `oauth` signs requests with MAAS
//! credentials, for node-init and node-image alike.

pub mod oauth;

use anyhow::Result;

use crate::root::Root;

pub const CLOUD_CFG_DIR: &str = "/etc/cloud/cloud.cfg.d";

/// The MAAS server's host, from `datasource.MAAS.metadata_url`.
pub fn server_host(root: &Root) -> Result<Option<String>> {
    let dir = root.path(CLOUD_CFG_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(None) };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("90_") && n.contains("maas") && n.ends_with(".cfg"))
        .collect();
    names.sort();
    for name in names {
        let Some(text) = root.read_string_opt(format!("{CLOUD_CFG_DIR}/{name}"))? else { continue };
        if let Some(host) = metadata_host(&text) {
            return Ok(Some(host));
        }
    }
    Ok(None)
}

fn metadata_host(yaml: &str) -> Option<String> {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).ok()?;
    let url = v.pointer("/datasource/MAAS/metadata_url")?.as_str()?;
    url::Url::parse(url).ok()?.host_str().map(|h| h.trim_matches(['[', ']']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_the_metadata_url() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        let cfg = "datasource:\n  MAAS:\n    consumer_key: ck\n    metadata_url: http://10.11.12.2:5248/MAAS/metadata/\n    token_key: tk\n    token_secret: ts\n";
        root.write("/etc/cloud/cloud.cfg.d/90_dpkg_maas.cfg", cfg.as_bytes(), 0o600).unwrap();
        assert_eq!(server_host(&root).unwrap().as_deref(), Some("10.11.12.2"));
    }
}
