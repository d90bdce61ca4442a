//! The resource an upload goes to, and the byte its chunks start from.
//!
//! [`Session::open`] finds the resource again through the upload record
//! (`record`) or creates it. [`Session::offset`] turns what MAAS says it
//! holds into the next byte to send, but only when that is exact
//! (`offset`); when it cannot be known, the file is started over: on
//! MAAS 3.5 and later a new create gives a new file that no region holds
//! any of, so byte 0 is exact again. MAAS 3.4 and earlier keep the bytes
//! of an image across creates (one large object per sha256) and append
//! every chunk to them, so there a file cannot be started over, and an
//! offset that cannot be known ends the upload with what to do.

use anyhow::{Context, bail};
use reqwest::Url;
use serde_json::Value;

use super::maas::{Maas, unexpected};
use super::offset::{Held, Progress};
use super::record::{Entry, Record};
use super::resource::{Line, ResourceFile};

/// Starts over in one run before giving up: each costs the whole image.
const RESTARTS: u32 = 3;

/// A resource's file and where its chunks go.
pub struct Target {
    pub id: u64,
    pub file: ResourceFile,
    pub url: Url,
}

pub struct Session {
    pub maas: Maas,
    /// The create's form fields, sha256 and size included.
    pub fields: Vec<(&'static str, String)>,
    pub sha256: String,
    pub size: u64,
    pub record: Record,
    /// The record's key for this upload: the API URL.
    pub api: String,
    regions: Option<u64>,
    restarts: u32,
}

impl Session {
    pub fn new(maas: Maas, fields: Vec<(&'static str, String)>, sha256: String, size: u64, record: Record) -> Self {
        let api = maas.api().to_string();
        Self { maas, fields, sha256, size, record, api, regions: None, restarts: 0 }
    }

    fn field(&self, name: &str) -> &str {
        self.fields.iter().find(|(k, _)| *k == name).map_or("", |(_, v)| v.as_str())
    }

    /// The resource of an earlier run of this image, when MAAS still has it
    /// as this run would create it; otherwise a new create.
    pub fn open(&mut self) -> anyhow::Result<Target> {
        let (name, arch) = (self.field("name").to_owned(), self.field("architecture").to_owned());
        let Some(id) = self.record.find(&self.api, &name, &arch, &self.sha256) else { return self.create() };
        let from = self.record.path().display().to_string();
        match self.maas.resource(id)? {
            None => eprintln!("node-image: MAAS has no resource {id} (named in {from}) any more; creating it"),
            Some(r) => match self.same_upload(&r)? {
                Ok(file) => {
                    let url = self.maas.upload_url(&file)?;
                    eprintln!("node-image: going on with resource {id} of an earlier run (named in {from})");
                    return Ok(Target { id, file, url });
                }
                Err(why) => eprintln!("node-image: resource {id} (named in {from}) {why}; creating it again"),
            },
        }
        self.create()
    }

    /// The file of `r` when it is what a create now would make; else why not.
    fn same_upload(&self, r: &Value) -> anyhow::Result<Result<ResourceFile, String>> {
        let file = ResourceFile::from_resource(r)?;
        let title = r.get("title").and_then(Value::as_str).unwrap_or_default();
        Ok(if file.sha256 != self.sha256 || file.size != self.size {
            Err("holds another image now".to_owned())
        } else if r.get("architecture").and_then(Value::as_str) != Some(self.field("architecture")) {
            Err("has another architecture now".to_owned())
        } else if title != self.field("title") {
            Err(format!("has the title {title:?}, not {:?}", self.field("title")))
        } else {
            Ok(file)
        })
    }

    /// `POST boot-resources/`, checked to describe this image, and recorded.
    pub fn create(&mut self) -> anyhow::Result<Target> {
        let created = self.maas.create(&self.fields)?;
        let id = created.get("id").and_then(Value::as_u64).ok_or_else(|| unexpected("the new resource has no id"))?;
        let file = ResourceFile::from_resource(&created)?;
        if file.sha256 != self.sha256 || file.size != self.size {
            bail!(
                "MAAS recorded resource {id} with sha256 {} and size {}, not this image's {} and {}",
                file.sha256,
                file.size,
                self.sha256,
                self.size
            );
        }
        self.record.save(Entry {
            maas: self.api.clone(),
            name: self.field("name").to_owned(),
            architecture: self.field("architecture").to_owned(),
            sha256: self.sha256.clone(),
            resource: id,
        });
        let url = self.maas.upload_url(&file)?;
        Ok(Target { id, file, url })
    }

    /// Counts MAAS's region controllers once, if what `file` says depends
    /// on them (MAAS 3.5 and later, something held). A failure here is
    /// worth another try, unlike an offset that cannot be known.
    pub fn count_regions(&mut self, file: &ResourceFile) -> anyhow::Result<()> {
        let needed = !file.complete && matches!(file.progress, Some(Progress::Sync(p)) if p != 0.0);
        if needed && self.regions.is_none() {
            self.regions = Some(self.maas.regions()?);
        }
        Ok(())
    }

    /// The byte `target`'s next chunk starts from: what MAAS holds when that
    /// is exact; else 0, with `target` started over (and why printed). Call
    /// [`Session::count_regions`] first.
    pub fn offset(&mut self, target: &mut Target) -> anyhow::Result<u64> {
        let regions = self.regions;
        let held = target.file.held(|| regions.context("the region controllers were not counted"));
        let why = match held {
            Held::Exact(n) if n <= self.size => return Ok(n),
            Held::Exact(n) => return Err(unexpected(format!("{n} bytes held of {}", self.size))),
            Held::Unknown(why) => why,
        };
        let id = target.id;
        if target.file.line == Line::LargeFile {
            bail!(
                "cannot tell where resource {id}'s upload stands: {why}. MAAS 3.4 and earlier append every chunk \
                 to the bytes already stored, so it cannot be started over either: delete the resource in MAAS \
                 (`maas PROFILE boot-resource delete {id}`) and run the same command again"
            );
        }
        self.restarts += 1;
        if self.restarts > RESTARTS {
            bail!("cannot tell where resource {id}'s upload stands: {why}; started over {RESTARTS} times already");
        }
        eprintln!("node-image: starting resource {id}'s file over from byte 0: {why}");
        *target = self.create().context("starting the file over")?;
        match target.file.held(|| anyhow::bail!("not asked: a new file")) {
            Held::Exact(0) => Ok(0),
            other => Err(unexpected(format!("a new file of resource {} already holds bytes ({other:?})", target.id))),
        }
    }
}
