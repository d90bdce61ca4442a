//! The boot-resources handlers of the MAAS stand-in, after MAAS's own:
//! `BootResourceForm` for a create (a known sha256 gives back the resource
//! and what it already holds), `append_chunk` for a PUT (the sha256 is
//! checked when the last byte arrives), and `boot_resource_to_dict` for
//! the JSON a GET or a create answers.

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Answer, answer};

/// One uploaded boot resource with its single file.
#[derive(Debug, Clone)]
pub struct Resource {
    pub id: u64,
    pub name: String,
    pub architecture: String,
    pub title: String,
    pub base_image: String,
    pub filetype: String,
    pub sha256: String,
    pub size: u64,
    pub data: Vec<u8>,
    pub complete: bool,
}

/// A create's multipart form fields.
pub(super) async fn form(body: Bytes, boundary: String) -> BTreeMap<String, String> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut out = BTreeMap::new();
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        out.insert(name, field.text().await.unwrap_or_default());
    }
    out
}

/// `BootResourceForm`: the required fields, then the resource. The same
/// name, architecture and sha256 give back the existing resource (and what
/// it already holds), as MAAS reuses a file with a known sha256.
pub(super) fn create(resources: &mut Vec<Resource>, f: BTreeMap<String, String>) -> Answer {
    let mut errors = serde_json::Map::new();
    for k in ["name", "architecture", "sha256", "size"] {
        if f.get(k).is_none_or(String::is_empty) {
            errors.insert(k.to_owned(), json!(["This field is required."]));
        }
    }
    let size = f.get("size").and_then(|s| s.parse::<u64>().ok());
    if size.is_none() && !errors.contains_key("size") {
        errors.insert("size".into(), json!(["Enter a whole number."]));
    }
    if f.get("architecture").is_some_and(|a| a != "amd64/generic") {
        errors.insert(
            "architecture".into(),
            json!([format!("Select a valid choice. {} is not one of the available choices.", f["architecture"])]),
        );
    }
    if !errors.is_empty() {
        return answer(StatusCode::BAD_REQUEST, "application/json", Value::Object(errors).to_string());
    }
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let existing = resources.iter().position(|r| r.name == f["name"] && r.architecture == f["architecture"]);
    let r = match existing {
        Some(i) if resources[i].sha256 == f["sha256"] => &resources[i],
        _ => {
            if let Some(i) = existing {
                resources.remove(i);
            }
            let id = resources.iter().map(|r| r.id).max().unwrap_or(6) + 1;
            resources.push(Resource {
                id,
                name: get("name"),
                architecture: get("architecture"),
                title: get("title"),
                base_image: get("base_image"),
                filetype: get("filetype"),
                sha256: get("sha256"),
                size: size.expect("checked"),
                data: Vec::new(),
                complete: false,
            });
            resources.last().expect("pushed")
        }
    };
    answer(StatusCode::CREATED, "application/json", describe(r).to_string())
}

/// `SyncLocalBootResourceFile.append_chunk` and the handler around it.
pub(super) fn store(r: &mut Resource, chunk: &[u8], declared: Option<usize>) -> Result<(), &'static str> {
    if chunk.is_empty() {
        return Err("Missing data.");
    }
    if declared != Some(chunk.len()) {
        return Err("Content-Length doesn't equal size of received data.");
    }
    if r.complete {
        return Err("Cannot upload to a complete file.");
    }
    if r.data.len() as u64 + chunk.len() as u64 > r.size {
        return Err("Too much data received.");
    }
    r.data.extend_from_slice(chunk);
    if r.data.len() as u64 == r.size {
        if crate::hex(&Sha256::digest(&r.data)) != r.sha256 {
            r.data.clear();
            return Err("Saved content does not match given SHA256 value.");
        }
        r.complete = true;
    }
    Ok(())
}

/// `boot_resource_to_dict(resource, with_sets=True)`.
pub(super) fn describe(r: &Resource) -> Value {
    let progress = 100.0 * r.data.len() as f64 / r.size.max(1) as f64;
    let mut file = json!({
        "filename": "root-tgz", "filetype": "root-tgz", "sha256": r.sha256,
        "filename_on_disk": format!("{}-{}", &r.sha256[..7.min(r.sha256.len())], r.size),
        "size": r.size, "complete": r.complete,
    });
    let mut set = json!({"version": "20261121", "label": "uploaded", "size": r.size, "complete": r.complete});
    if !r.complete {
        file["progress"] = json!(progress);
        file["upload_uri"] = json!(format!("/MAAS/api/2.0/boot-resources/{}/upload/{}/", r.id, r.id));
        set["progress"] = json!(progress);
    }
    set["files"] = json!({"root-tgz": file});
    json!({
        "id": r.id, "type": "Uploaded", "name": r.name, "architecture": r.architecture,
        "resource_uri": format!("/MAAS/api/2.0/boot-resources/{}/", r.id),
        "last_deployed": null, "title": r.title, "base_image": r.base_image,
        "subarches": "generic", "sets": {"20261121": set},
    })
}
