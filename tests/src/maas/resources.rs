//! The boot-resources handlers of the MAAS stand-in, after MAAS's own
//! (src/maasserver in canonical/maas): `BootResourceNoContentForm` for a
//! create (the resource of that name and architecture gets a new set and
//! file, its older files go), `BootResourceFileUploadHandler.update` for a
//! PUT (in `store.rs`, per release line), and `boot_resource_to_dict` for
//! the JSON a GET or a create answers, which differs by line: up to 3.4 a
//! file's `progress` is `LargeFile.progress` (size / bytes stored), from 3.5
//! it is `sync_progress` (a percentage of the bytes of every region) and
//! the file gains `filename_on_disk`.

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};

use super::store::{FileRow, Res, Store};
use super::{Answer, answer};

/// One uploaded boot resource with the file of its newest set, as a test
/// looks at it: what was posted, and what MAAS holds.
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
    /// The bytes held (by the database up to 3.4, by the stand-in's own
    /// region from 3.5).
    pub data: Vec<u8>,
    /// What MAAS says: from 3.5, only once every region holds it.
    pub complete: bool,
    /// The id of the file chunks go to.
    pub file: u64,
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

/// `BootResourceNoContentForm`: the required fields, then `save`: the
/// resource of that name and architecture (or a new one) gets a new set
/// with a new file, and its older files are deleted.
pub(super) fn create(store: &mut Store, f: BTreeMap<String, String>) -> Answer {
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
    let id = match store.resources.iter_mut().find(|r| r.name == f["name"] && r.architecture == f["architecture"]) {
        Some(r) => {
            r.title = get("title");
            if r.base_image.is_empty() {
                r.base_image = get("base_image");
            }
            r.id
        }
        None => {
            let id = store.id();
            store.resources.push(Res {
                id,
                name: get("name"),
                architecture: get("architecture"),
                title: get("title"),
                base_image: get("base_image"),
                filetype: get("filetype"),
            });
            id
        }
    };
    let set = store.id();
    let version = next_version(store, id);
    store.sets.push(super::store::Set { id: set, resource: id, version });
    if let Err(e) = store.add_file(set, &f["sha256"], size.expect("checked")) {
        return answer(StatusCode::BAD_REQUEST, "application/json", json!({"__all__": [e]}).to_string());
    }
    store.drop_old_files(id, set);
    answer(StatusCode::CREATED, "application/json", describe(store, id).to_string())
}

/// `BootResource.get_next_version_name`: today's date, then `.1`, `.2`…
/// (the stand-in's today is fixed).
fn next_version(store: &Store, id: u64) -> String {
    const TODAY: &str = "20261121";
    let mut taken = store.sets.iter().filter(|s| s.resource == id && s.version.starts_with(TODAY)).peekable();
    if taken.peek().is_none() {
        return TODAY.to_owned();
    }
    let last = taken.filter_map(|s| s.version.split_once('.')?.1.parse::<u32>().ok()).max().unwrap_or(0);
    format!("{TODAY}.{}", last + 1)
}

/// `boot_resource_to_dict(resource, with_sets=True)` of the release played.
pub(super) fn describe(store: &Store, id: u64) -> Value {
    let r = store.resources.iter().find(|r| r.id == id).expect("a known resource");
    let mut sets = serde_json::Map::new();
    for set in store.sets.iter().filter(|s| s.resource == id) {
        let files: Vec<&FileRow> = store.files.iter().filter(|f| f.set == set.id).collect();
        let mut dicts = serde_json::Map::new();
        for f in &files {
            let d = file_dict(store, r, f);
            dicts.insert(d["filename"].as_str().expect("a name").to_owned(), d);
        }
        let mut d = set_dict(store, &files);
        d["version"] = json!(set.version);
        d["files"] = Value::Object(dicts);
        sets.insert(set.version.clone(), d);
    }
    // `clean_name` keeps only NAME of custom/NAME.
    let name = r.name.strip_prefix("custom/").unwrap_or(&r.name);
    let mut d = json!({
        "id": r.id, "type": "Uploaded", "name": name, "architecture": r.architecture,
        "resource_uri": format!("/MAAS/api/2.0/boot-resources/{}/", r.id),
        "subarches": "generic", "title": r.title, "sets": sets,
    });
    if store.version.release >= (3, 4) {
        d["last_deployed"] = Value::Null;
    }
    d
}

/// `boot_resource_file_to_dict`.
fn file_dict(store: &Store, r: &Res, f: &FileRow) -> Value {
    let (filename, progress, complete) = if store.version.sync() {
        let all: u64 = store.syncs.iter().filter(|((id, _), _)| *id == f.id).map(|(_, n)| n).sum();
        let rows = store.syncs.keys().any(|(id, _)| *id == f.id);
        let regions = store.version.regions as u64;
        // `sync_progress`: 0.0 without rows, else a percentage of all regions.
        let p = if rows { 100.0 * all as f64 / (f.size * regions) as f64 } else { 0.0 };
        ("root.tgz", json!(p), p == 100.0)
    } else {
        let held = store.large.get(&f.sha256).map_or(0, |l| l.data.len() as u64);
        // `LargeFile.progress`: the int 0 while nothing is stored, else
        // total_size / size.
        let p = if held == 0 { json!(0) } else { json!(f.size as f64 / held as f64) };
        ("root-tgz", p, held == f.size)
    };
    let mut d = json!({"filename": filename, "filetype": "root-tgz", "sha256": f.sha256, "size": f.size,
                       "complete": complete});
    if store.version.sync() {
        d["filename_on_disk"] = json!(f.filename_on_disk);
    }
    if !complete {
        d["progress"] = progress;
        d["upload_uri"] = json!(format!("/MAAS/api/2.0/boot-resources/{}/upload/{}/", r.id, f.id));
    }
    d
}

/// `boot_resource_set_to_dict` without its version and files.
fn set_dict(store: &Store, files: &[&FileRow]) -> Value {
    let total: u64 = files.iter().map(|f| f.size).sum();
    let (progress, complete) = if store.version.sync() {
        let cur: u64 = files
            .iter()
            .map(|f| store.syncs.iter().filter(|((id, _), _)| *id == f.id).map(|(_, n)| n).sum::<u64>())
            .sum();
        let all = total * store.version.regions as u64;
        let p = if all > 0 { 100.0 * cur as f64 / all as f64 } else { 0.0 };
        (json!(p), p == 100.0)
    } else {
        let held: u64 = files.iter().map(|f| store.large.get(&f.sha256).map_or(0, |l| l.data.len() as u64)).sum();
        let p = if held == 0 { json!(0) } else { json!(100.0 * held as f64 / total as f64) };
        (p, !files.is_empty() && files.iter().all(|f| store.held(f).1))
    };
    let mut d = json!({"label": "uploaded", "size": total, "complete": complete});
    if !complete {
        d["progress"] = progress;
    }
    d
}

/// `BootResourceFileUploadHandler.update` for a chunk to a known file:
/// the request's own checks, then the store's.
pub(super) fn put(store: &mut Store, file: u64, chunk: &[u8], declared: Option<usize>) -> Result<(), &'static str> {
    if chunk.is_empty() {
        return Err("Missing data.");
    }
    if declared != Some(chunk.len()) {
        return Err("Content-Length doesn't equal size of received data.");
    }
    store.append(file, chunk)
}

/// `GET boot-resources/`: every resource without its sets
/// (`boot_resource_to_dict(resource, with_sets=False)`).
pub(super) fn list(store: &Store) -> Value {
    store
        .resources
        .iter()
        .map(|r| {
            let mut d = describe(store, r.id);
            d.as_object_mut().expect("a dict").remove("sets");
            d
        })
        .collect()
}

/// An uploaded image `name` whose file MAAS holds whole.
pub(super) fn seed(store: &mut Store, name: &str, data: &[u8]) {
    use sha2::Digest as _;
    let fields: BTreeMap<String, String> = [
        ("name", name.to_owned()),
        ("architecture", "amd64/generic".to_owned()),
        ("sha256", hex(&sha2::Sha256::digest(data))),
        ("size", data.len().to_string()),
        ("filetype", "tgz".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    create(store, fields);
    let id = store.resources.iter().find(|r| r.name == name).map(|r| r.id).expect("created");
    let file = store.newest_file(id).map(|f| f.id).expect("a file");
    store.append(file, data).expect("the whole file");
    if store.version.sync() {
        store.sync_regions();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every resource as a test looks at it.
pub(super) fn view(store: &Store) -> Vec<Resource> {
    store
        .resources
        .iter()
        .filter_map(|r| {
            let f = store.newest_file(r.id)?;
            Some(Resource {
                id: r.id,
                name: r.name.clone(),
                architecture: r.architecture.clone(),
                title: r.title.clone(),
                base_image: r.base_image.clone(),
                filetype: r.filetype.clone(),
                sha256: f.sha256.clone(),
                size: f.size,
                data: store.data(f),
                complete: file_dict(store, r, f)["complete"] == json!(true),
                file: f.id,
            })
        })
        .collect()
}
