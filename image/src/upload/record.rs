//! The upload record beside the image (`IMAGE.upload.json`): which MAAS
//! resource this image went to, so that a later run finds it again instead
//! of creating it anew.
//!
//! From MAAS 3.5 a create of a resource that already exists starts a new
//! file and drops what the regions held of the old one (the form's `save`
//! removes the old files' sync rows), so a second run that created the
//! resource again would send every byte again, and would do so even for an
//! image MAAS already has whole. Reading the resource the record names
//! first avoids both. The record holds no secret: the MAAS API URL, the
//! resource's name, architecture and id, and the image's sha256. It is
//! best effort: one that cannot be read or written costs only the resume.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// One upload: where to, what, and the resource MAAS gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub maas: String,
    pub name: String,
    pub architecture: String,
    pub sha256: String,
    pub resource: u64,
}

pub struct Record {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl Record {
    /// The record beside `image`; none yet, or one that cannot be read,
    /// is an empty record (and the latter a warning).
    pub fn load(image: &Path) -> Self {
        let mut path = image.as_os_str().to_owned();
        path.push(".upload.json");
        let path = PathBuf::from(path);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes).unwrap_or_else(|| {
                eprintln!("node-image: warning: {} is not an upload record; ignoring it", path.display());
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                eprintln!("node-image: warning: reading {}: {e}; ignoring it", path.display());
                Vec::new()
            }
        };
        Self { path, entries }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The resource this image went to on `maas` under `name` and
    /// `architecture`, if recorded.
    pub fn find(&self, maas: &str, name: &str, architecture: &str, sha256: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.maas == maas && e.name == name && e.architecture == architecture && e.sha256 == sha256)
            .map(|e| e.resource)
    }

    /// Records `entry` in place of any for the same MAAS, name and
    /// architecture, written whole or not at all; a failure is a warning.
    pub fn save(&mut self, entry: Entry) {
        self.entries
            .retain(|e| !(e.maas == entry.maas && e.name == entry.name && e.architecture == entry.architecture));
        self.entries.push(entry);
        let uploads: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                json!({"maas": e.maas, "name": e.name, "architecture": e.architecture,
                       "sha256": e.sha256, "resource": e.resource})
            })
            .collect();
        let text = serde_json::to_string_pretty(&json!({ "uploads": uploads })).expect("JSON") + "\n";
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            eprintln!(
                "node-image: warning: writing {}: {e}; a later run will create the resource again",
                self.path.display()
            );
        }
    }
}

fn parse(bytes: &[u8]) -> Option<Vec<Entry>> {
    let doc: Value = serde_json::from_slice(bytes).ok()?;
    let text = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
    doc.get("uploads")?
        .as_array()?
        .iter()
        .map(|e| {
            Some(Entry {
                maas: text(e, "maas")?,
                name: text(e, "name")?,
                architecture: text(e, "architecture")?,
                sha256: text(e, "sha256")?,
                resource: e.get("resource")?.as_u64()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(maas: &str, resource: u64) -> Entry {
        Entry {
            maas: maas.into(),
            name: "custom/pcg".into(),
            architecture: "amd64/generic".into(),
            sha256: "ab".into(),
            resource,
        }
    }

    #[test]
    fn a_saved_upload_is_found_again_per_maas_and_replaced_by_the_next() {
        let dir = tempfile_dir();
        let image = dir.join("pcg.tgz");
        let mut r = Record::load(&image);
        assert_eq!(r.find("http://a/MAAS/api/2.0/", "custom/pcg", "amd64/generic", "ab"), None);
        r.save(entry("http://a/MAAS/api/2.0/", 7));
        r.save(entry("http://b/MAAS/api/2.0/", 9));
        r.save(entry("http://a/MAAS/api/2.0/", 8));
        let r = Record::load(&image);
        assert_eq!(r.path(), dir.join("pcg.tgz.upload.json"));
        assert_eq!(r.find("http://a/MAAS/api/2.0/", "custom/pcg", "amd64/generic", "ab"), Some(8));
        assert_eq!(r.find("http://b/MAAS/api/2.0/", "custom/pcg", "amd64/generic", "ab"), Some(9));
        assert_eq!(r.find("http://b/MAAS/api/2.0/", "custom/pcg", "amd64/generic", "cd"), None);
        assert_eq!(r.entries.len(), 2);
        std::fs::write(r.path(), "{\"uploads\": 3}").unwrap();
        assert!(Record::load(&image).entries.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A fresh directory under the system's temp dir (the crate has no
    /// tempfile dependency).
    fn tempfile_dir() -> PathBuf {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).expect("random");
        let dir = std::env::temp_dir().join(format!("node-image-record-{}", hex::encode(raw)));
        std::fs::create_dir(&dir).unwrap();
        dir
    }
}
