//! The resumable chunk loop of an upload: the image goes to MAAS in
//! `PUT`s of a fixed size, from the offset MAAS says it holds.
//!
//! A chunk MAAS refuses ends the upload. One that fails otherwise may
//! still have landed, so before sending again the loop asks MAAS how many
//! bytes it holds and carries on from there when that is exact: no byte is
//! sent twice for a dropped connection. When it is not (MAAS 3.5 and later
//! with several region controllers), the session starts the file over.
//! [`ATTEMPTS`] failures in a row end it with a message that says to run
//! the same command again, which resumes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, anyhow, bail};

use super::maas::{ATTEMPTS, Put, backoff};
use super::session::{Session, Target};

/// The image on its way to `target`'s file.
pub struct Chunks<'a> {
    pub session: &'a mut Session,
    pub target: Target,
    pub image: File,
    pub path: &'a Path,
    pub chunk: usize,
}

impl Chunks<'_> {
    /// Sends the image from `offset` on, and returns how many chunks were
    /// sent and the resource that holds them.
    pub fn send_from(mut self, mut offset: u64) -> anyhow::Result<(u64, u64)> {
        let size = self.session.size;
        let mut buf = vec![0u8; self.chunk];
        let mut failures = 0u32;
        let mut sent_chunks = 0u64;
        // After a failed PUT the chunk may still have landed (the connection
        // can drop after MAAS stored it): only MAAS knows, so ask it rather
        // than send the same bytes twice.
        let mut in_doubt = false;
        loop {
            let id = self.target.id;
            let attempt = if in_doubt {
                let now = self.session.maas.file(id);
                match now.and_then(|now| self.session.count_regions(&now).map(|()| now)) {
                    Ok(now) => {
                        self.target.file = now;
                        // Not a failure to retry: an offset that cannot be
                        // known and cannot be started over ends the upload.
                        offset = self.session.offset(&mut self.target)?;
                        in_doubt = false;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            } else if offset >= size {
                return Ok((sent_chunks, self.target.id));
            } else {
                let len = usize::try_from((size - offset).min(self.chunk as u64)).expect("a chunk fits in memory");
                let chunk = &mut buf[..len];
                self.image.seek(SeekFrom::Start(offset)).and_then(|_| self.image.read_exact(chunk)).with_context(
                    || format!("reading {} at byte {offset} (did it change during the upload?)", self.path.display()),
                )?;
                match self.session.maas.put(&self.target.url, chunk) {
                    Ok(()) => {
                        progress(offset, offset + len as u64, size);
                        offset += len as u64;
                        sent_chunks += 1;
                        failures = 0;
                        Ok(())
                    }
                    Err(Put::Refused(why)) => {
                        bail!("MAAS refused the chunk at byte {offset} of resource {id}: {why}");
                    }
                    Err(Put::Transient(why)) => {
                        in_doubt = true;
                        Err(anyhow!("chunk at byte {offset}: {why}"))
                    }
                }
            };
            if let Err(e) = attempt {
                failures += 1;
                if failures >= ATTEMPTS {
                    bail!(
                        "giving up at byte {offset} of {size} after {ATTEMPTS} failures in a row, the last: {e:#}; \
                         run the same command again to resume"
                    );
                }
                let wait = backoff(failures);
                eprintln!("node-image: {e:#}; asking MAAS where the upload stands in {}s", wait.as_secs());
                std::thread::sleep(wait);
            }
        }
    }
}

/// A line each time the upload passes a tenth of the image.
fn progress(before: u64, done: u64, size: u64) {
    let step = size.div_ceil(10).max(1);
    if done == size || done / step != before / step {
        eprintln!("node-image: {}% ({done} of {size} bytes)", done * 100 / size);
    }
}
