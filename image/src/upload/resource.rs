//! A boot resource's file as MAAS describes it (`boot_resource_to_dict`
//! with its sets, in src/maasserver/api/boot_resources.py), read into what
//! an upload needs: size, sha256, whether it is complete, where its chunks
//! go, and how MAAS reported the bytes it holds.
//!
//! The two release lines describe a file differently, and the answer
//! itself tells them apart: from 3.5 `boot_resource_file_to_dict` adds
//! `filename_on_disk` (the file's name in each region's own image store)
//! and its `progress` is the regions' sync progress; up to 3.4 there is no
//! such key and `progress` is the large object's (see `offset`).

use anyhow::anyhow;
use serde_json::Value;

use super::offset::{self, Held, Progress};

/// How the MAAS that answered stores an uploaded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// 3.4 and earlier: one large object in the database, shared by every
    /// file with the same sha256, kept across a new create.
    LargeFile,
    /// 3.5 and later: a copy in each region's store, counted per region in
    /// `BootResourceFileSync`; a new create starts a new file from nothing.
    Sync,
}

/// The one file of the newest set of a boot resource.
#[derive(Debug)]
pub struct ResourceFile {
    pub sha256: String,
    pub size: u64,
    pub complete: bool,
    pub line: Line,
    /// What MAAS said about the bytes it holds (absent once complete).
    pub progress: Option<Progress>,
    pub upload_uri: String,
}

impl ResourceFile {
    pub fn from_resource(r: &Value) -> anyhow::Result<Self> {
        let bad =
            |what: &str| anyhow!("unexpected answer from MAAS: {what} in {}", super::maas::excerpt(&r.to_string()));
        let sets = r.get("sets").and_then(Value::as_object).ok_or_else(|| bad("no sets"))?;
        let newest = sets.keys().max_by_key(|v| version(v)).ok_or_else(|| bad("no set"))?;
        let files = sets[newest].get("files").and_then(Value::as_object).ok_or_else(|| bad("no files"))?;
        let [(_, f)] = files.iter().collect::<Vec<_>>()[..] else {
            return Err(bad("not exactly one file in the newest set"));
        };
        let size = f.get("size").and_then(Value::as_u64).ok_or_else(|| bad("no file size"))?;
        let complete = f.get("complete").and_then(Value::as_bool).ok_or_else(|| bad("no complete flag"))?;
        let line = if f.get("filename_on_disk").is_some() { Line::Sync } else { Line::LargeFile };
        let progress = f.get("progress").and_then(Value::as_f64).map(|p| match line {
            Line::LargeFile => Progress::LargeFile(p),
            Line::Sync => Progress::Sync(p),
        });
        let upload_uri = match f.get("upload_uri").and_then(Value::as_str) {
            Some(u) => u.to_owned(),
            None if complete => String::new(),
            None => return Err(bad("an incomplete file without upload_uri (is it an uploaded resource?)")),
        };
        Ok(Self {
            sha256: f.get("sha256").and_then(Value::as_str).ok_or_else(|| bad("no file sha256"))?.to_owned(),
            size,
            complete,
            line,
            progress,
            upload_uri,
        })
    }

    /// The bytes MAAS holds, exactly, or why that cannot be known.
    /// `regions` counts the region controllers, asked only when needed.
    pub fn held(&self, regions: impl FnOnce() -> anyhow::Result<u64>) -> Held {
        match self.progress {
            _ if self.complete => Held::Exact(self.size),
            Some(p) => offset::held(self.size, p, regions),
            None => Held::Unknown("MAAS gave no progress for a file it does not call complete".to_owned()),
        }
    }
}

/// A set's version, `YYYYMMDD` with an optional `.N` (MAAS's
/// `BootResource.get_next_version_name`), as numbers: `20261121.10` is
/// newer than `20261121.9`, which a string comparison gets wrong.
fn version(v: &str) -> (u64, u64, &str) {
    let (date, rev) = v.split_once('.').unwrap_or((v, "0"));
    (date.parse().unwrap_or(0), rev.parse().unwrap_or(0), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_bytes_come_from_progress() {
        // MAAS 3.5 and later (the file has `filename_on_disk`): progress is
        // a percentage of the bytes of every region, here one.
        let r = |progress: f64, complete: bool| {
            serde_json::json!({"id": 3, "sets": {
                "20261120": {"files": {"root-tgz": {"sha256": "old", "size": 1, "complete": true}}},
                "20261121": {"files": {"root.tgz": {
                    "sha256": "ab", "size": 10_000_019u64, "complete": complete, "progress": progress,
                    "filename_on_disk": "ab12345",
                    "upload_uri": "/MAAS/api/2.0/boot-resources/3/upload/9/"}}}}})
        };
        // 4 MiB of 10 000 019 bytes, as a percentage.
        let f = ResourceFile::from_resource(&r(100.0 * 4_194_304.0 / 10_000_019.0, false)).expect("file");
        assert_eq!((f.held(|| Ok(1)), f.sha256.as_str(), f.complete), (Held::Exact(4_194_304), "ab", false));
        assert_eq!(
            ResourceFile::from_resource(&r(0.0, true)).expect("file").held(|| panic!("asked")),
            Held::Exact(10_000_019)
        );
        let e = ResourceFile::from_resource(&serde_json::json!({"id": 3, "sets": {}})).unwrap_err();
        assert!(e.to_string().contains("no set"), "{e}");
    }

    #[test]
    fn up_to_3_4_progress_is_size_over_bytes_held() {
        // MAAS 3.3's answer for 2 MiB of 5.5 MiB: LargeFile.progress.
        let file = serde_json::json!({"sha256": "ab", "size": 5_767_168u64, "complete": false,
            "progress": 2.75, "filetype": "root-tgz", "upload_uri": "/MAAS/api/2.0/boot-resources/7/upload/8/"});
        let r = serde_json::json!({"id": 7, "sets": {"20261121": {"files": {"root-tgz": file}}}});
        let f = ResourceFile::from_resource(&r).expect("file");
        assert_eq!((f.line, f.held(|| panic!("asked"))), (Line::LargeFile, Held::Exact(2 << 20)));
    }

    #[test]
    fn the_newest_set_is_chosen_by_number_not_by_string() {
        let set = |sha: &str| serde_json::json!({"files": {"root-tgz": {"sha256": sha, "size": 1, "complete": true}}});
        let r = serde_json::json!({"id": 3, "sets": {
            "20261121.9": set("nine"), "20261121.10": set("ten"), "20261120.11": set("older")}});
        assert_eq!(ResourceFile::from_resource(&r).expect("file").sha256, "ten");
    }
}
