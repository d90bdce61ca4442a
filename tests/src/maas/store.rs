//! What the MAAS stand-in holds of uploaded boot resources, kept as the
//! release it plays keeps it (read in canonical/maas, src/maasserver):
//!
//! - 3.4 and earlier: a file's bytes are one `LargeFile` per sha256 in the
//!   database (models/largefile.py), shared by every `BootResourceFile`
//!   with that sha256 and deleted with the last of them. The upload handler
//!   (api/boot_resources.py, `BootResourceFileUploadHandler.update`)
//!   appends each chunk at the large object's end and counts it; a failed
//!   sha256 check on the last chunk raises inside the request's savepoint,
//!   so the chunk and its count are rolled back.
//! - 3.5 and later: each region controller keeps its own copy in its image
//!   store (utils/bootresource.py, `LocalBootResourceFile`), and a
//!   `BootResourceFileSync` row per file and region counts its bytes
//!   (models/bootresourcefile.py). The handler writes a chunk at the byte
//!   the serving region's row says (allocating, which empties the copy,
//!   while the row is 0), then adds to the row; a failed sha256 check
//!   leaves the bytes written but the row unchanged. Other regions copy a
//!   file once one holds it whole ([`Store::sync_regions`] plays that).
//!
//! Either way a create adds a set with a new file to the resource of that
//! name and architecture and deletes the resource's older files (forms,
//! `BootResourceForm.save`): up to 3.4 the large object lives on in the new
//! file; from 3.5 the old file's sync rows go with it, so the new file is
//! held nowhere. The stand-in's own region is region 0.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Which MAAS the stand-in plays: the release line and how many region
/// controllers it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub release: (u32, u32),
    pub regions: usize,
}

impl Version {
    pub const fn new(major: u32, minor: u32, regions: usize) -> Self {
        Self { release: (major, minor), regions }
    }

    /// Files counted per region (3.5 and later), not as one large object.
    pub fn sync(&self) -> bool {
        self.release >= (3, 5)
    }
}

impl Default for Version {
    fn default() -> Self {
        Self::new(3, 3, 1)
    }
}

pub(super) struct Res {
    pub id: u64,
    pub name: String,
    pub architecture: String,
    pub title: String,
    pub base_image: String,
    pub filetype: String,
}

pub(super) struct Set {
    pub id: u64,
    pub resource: u64,
    pub version: String,
}

pub(super) struct FileRow {
    pub id: u64,
    pub set: u64,
    pub sha256: String,
    pub size: u64,
    pub filename_on_disk: String,
}

/// 3.4 and earlier: the bytes of every file with one sha256.
pub(super) struct LargeFile {
    pub total: u64,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub(super) struct Store {
    pub version: Version,
    pub resources: Vec<Res>,
    pub sets: Vec<Set>,
    pub files: Vec<FileRow>,
    pub large: BTreeMap<String, LargeFile>,
    /// (file, region) -> bytes that region holds.
    pub syncs: BTreeMap<(u64, usize), u64>,
    /// Per region: its image store, by `filename_on_disk`.
    pub disks: Vec<BTreeMap<String, Vec<u8>>>,
    next_id: u64,
}

impl Store {
    pub fn new(version: Version) -> Self {
        Self { version, disks: vec![BTreeMap::new(); version.regions], next_id: 6, ..Self::default() }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The file of the newest set of resource `id`.
    pub fn newest_file(&self, id: u64) -> Option<&FileRow> {
        let set = self.sets.iter().filter(|s| s.resource == id).max_by_key(|s| s.id)?;
        self.files.iter().find(|f| f.set == set.id)
    }

    /// Bytes held of `file` (by region 0 from 3.5), and whether MAAS calls
    /// it complete.
    pub fn held(&self, file: &FileRow) -> (u64, bool) {
        if self.version.sync() {
            let all: u64 = self.syncs.iter().filter(|((f, _), _)| *f == file.id).map(|(_, n)| n).sum();
            let mine = self.syncs.get(&(file.id, 0)).copied().unwrap_or(0);
            (mine, all == file.size * self.version.regions as u64)
        } else {
            let n = self.large.get(&file.sha256).map_or(0, |l| l.data.len() as u64);
            (n, n == file.size)
        }
    }

    /// The bytes region 0 (or the database) holds of `file`.
    pub fn data(&self, file: &FileRow) -> Vec<u8> {
        let (held, _) = self.held(file);
        let data = if self.version.sync() {
            self.disks[0].get(&file.filename_on_disk).map(Vec::as_slice).unwrap_or_default()
        } else {
            self.large.get(&file.sha256).map(|l| l.data.as_slice()).unwrap_or_default()
        };
        data[..(held as usize).min(data.len())].to_vec()
    }

    /// The file's new row for a create (the form's `create_resource_file`).
    pub fn add_file(&mut self, set: u64, sha256: &str, size: u64) -> Result<(), String> {
        let known = self.files.iter().find(|f| f.sha256 == sha256);
        if known.is_some_and(|f| f.size != size) {
            return Err("File already exists with sha256 that is of different size.".into());
        }
        let filename_on_disk =
            known.map_or_else(|| sha256[..7.min(sha256.len())].to_owned(), |f| f.filename_on_disk.clone());
        if !self.version.sync() {
            self.large.entry(sha256.to_owned()).or_insert(LargeFile { total: size, data: Vec::new() });
        }
        let id = self.id();
        self.files.push(FileRow { id, set, sha256: sha256.to_owned(), size, filename_on_disk });
        Ok(())
    }

    /// Deletes resource `id`'s files outside `keep`, with what only they
    /// referenced (large objects; sync rows and store copies).
    pub fn drop_old_files(&mut self, id: u64, keep: u64) {
        let sets: Vec<u64> = self.sets.iter().filter(|s| s.resource == id && s.id != keep).map(|s| s.id).collect();
        let gone: Vec<u64> = self.files.iter().filter(|f| sets.contains(&f.set)).map(|f| f.id).collect();
        self.files.retain(|f| !gone.contains(&f.id));
        self.syncs.retain(|(f, _), _| !gone.contains(f));
        let files = &self.files;
        self.large.retain(|sha, _| files.iter().any(|f| &f.sha256 == sha));
        for disk in &mut self.disks {
            disk.retain(|name, _| files.iter().any(|f| &f.filename_on_disk == name));
        }
    }

    /// The byte the next chunk to `file` lands at: region 0's count from
    /// 3.5, the large object's end before.
    pub fn before(&self, file: u64) -> u64 {
        let f = self.files.iter().find(|f| f.id == file).expect("a known file");
        if self.version.sync() {
            self.syncs.get(&(file, 0)).copied().unwrap_or(0)
        } else {
            self.large.get(&f.sha256).map_or(0, |l| l.data.len() as u64)
        }
    }

    /// The upload handler's work for one chunk to `file` (known to exist),
    /// or MAAS's error.
    pub fn append(&mut self, file: u64, chunk: &[u8]) -> Result<(), &'static str> {
        let f = self.files.iter().find(|f| f.id == file).expect("a known file");
        let (sha256, size, name) = (f.sha256.clone(), f.size, f.filename_on_disk.clone());
        if self.version.sync() {
            let row = self.before(file);
            self.append_sync(file, &sha256, size, &name, row, chunk)
        } else {
            append_large(self.large.get_mut(&sha256).expect("a file's large object"), &sha256, chunk)
        }
    }

    fn append_sync(
        &mut self,
        file: u64,
        sha: &str,
        size: u64,
        name: &str,
        row: u64,
        chunk: &[u8],
    ) -> Result<(), &'static str> {
        if row == size {
            return Err("Cannot upload to a complete file.");
        }
        let disk = &mut self.disks[0];
        if row == 0 {
            // `allocate`: a new partial file of the full size, zero-filled.
            disk.insert(name.to_owned(), vec![0; size as usize]);
        }
        let data = disk.entry(name.to_owned()).or_insert_with(|| vec![0; size as usize]);
        let end = row as usize + chunk.len();
        if end > data.len() {
            return Err("Too much data received.");
        }
        data[row as usize..end].copy_from_slice(chunk);
        if end as u64 == size && crate::hex(&Sha256::digest(&data[..])) != sha {
            return Err("Saved content does not match given SHA256 value.");
        }
        self.syncs.insert((file, 0), end as u64);
        Ok(())
    }

    /// What the other regions do once one region holds a file whole: copy
    /// it from there.
    pub fn sync_regions(&mut self) {
        let whole: Vec<(u64, u64, String, usize)> = self
            .files
            .iter()
            .filter_map(|f| {
                let from = (0..self.version.regions).find(|r| self.syncs.get(&(f.id, *r)) == Some(&f.size))?;
                Some((f.id, f.size, f.filename_on_disk.clone(), from))
            })
            .collect();
        for (file, size, name, from) in whole {
            let data = self.disks[from][&name].clone();
            for r in 0..self.version.regions {
                self.disks[r].insert(name.clone(), data.clone());
                self.syncs.insert((file, r), size);
            }
        }
    }
}

/// 3.4 and earlier: the chunk goes at the large object's end; a last chunk
/// that fails the sha256 check is rolled back with the request.
fn append_large(large: &mut LargeFile, sha256: &str, chunk: &[u8]) -> Result<(), &'static str> {
    let before = large.data.len();
    if before as u64 == large.total {
        return Err("Cannot upload to a complete file.");
    }
    if before as u64 + chunk.len() as u64 > large.total {
        return Err("Too much data received.");
    }
    large.data.extend_from_slice(chunk);
    if large.data.len() as u64 == large.total && crate::hex(&Sha256::digest(&large.data)) != sha256 {
        large.data.truncate(before);
        return Err("Saved content does not match given SHA256 value.");
    }
    Ok(())
}
