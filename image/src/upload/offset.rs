//! How many bytes of a file MAAS holds, recovered exactly from the
//! `progress` float its API reports, or the reason it cannot be.
//!
//! MAAS never sends the byte count; it sends a float computed from it, and
//! the formula depends on the release line (read in canonical/maas):
//!
//! - Up to 3.4 the file's `progress` is `LargeFile.progress`
//!   (src/maasserver/models/largefile.py): the final size divided by the
//!   bytes stored so far (so it runs from the size down to 1, and is 0
//!   while nothing is stored). The bytes live once, in the database, so
//!   every region sees the same count.
//! - From 3.5 it is `BootResourceFile.sync_progress`
//!   (src/maasserver/models/bootresourcefile.py): a hundred times the bytes
//!   of all `BootResourceFileSync` rows (one per region controller holding
//!   some of the file) over the size times the number of region
//!   controllers. With one region that is the region's own count; with
//!   several it is a sum, and the part the uploading region holds (where
//!   its next `PUT` writes) cannot be told.
//!
//! A float is turned back into bytes only when exactly one whole number
//! gives that very float through the same IEEE arithmetic Python does;
//! otherwise the offset is not known and the caller must not guess.

/// What a file's description says about the bytes MAAS holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// MAAS 3.4 and earlier: `size / held`, or 0 when nothing is held.
    LargeFile(f64),
    /// MAAS 3.5 and later: `100 * (held by all regions) / (size * regions)`.
    Sync(f64),
}

/// Where an upload can go on from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// MAAS holds exactly this many bytes: the next chunk starts here.
    Exact(u64),
    /// It cannot be known, and why.
    Unknown(String),
}

/// The bytes MAAS holds of a file of `size` bytes that is not complete.
/// `regions` is asked for the number of region controllers only when
/// the answer depends on it (MAAS 3.5 and later, something held).
pub fn held(size: u64, progress: Progress, regions: impl FnOnce() -> anyhow::Result<u64>) -> Held {
    match progress {
        // largefile.py, LargeFile.progress: 0 (an int) while nothing is stored.
        Progress::LargeFile(0.0) => Held::Exact(0),
        Progress::LargeFile(p) => {
            // total_size / float(size): both exact as doubles below 2^53.
            let guess = size as f64 / p;
            match unique(guess, 1, size.saturating_sub(1), |s| size as f64 / s as f64 == p) {
                Some(n) => Held::Exact(n),
                None => Held::Unknown(format!(
                    "MAAS's progress {p} for a file of {size} bytes matches no single byte count \
                     (MAAS 3.4 and earlier report size / bytes held)"
                )),
            }
        }
        // bootresourcefile.py, sync_progress: 0.0 while no region holds any.
        Progress::Sync(0.0) => Held::Exact(0),
        Progress::Sync(p) => {
            let regions = match regions() {
                Ok(n) if n > 0 => n,
                Ok(_) => return Held::Unknown("MAAS lists no region controller".to_owned()),
                Err(e) => return Held::Unknown(format!("counting MAAS's region controllers: {e:#}")),
            };
            let all = size.saturating_mul(regions);
            // 100.0 * sync_size / (size * n_regions): the product is a
            // Python int, made a double for the division.
            let formula = |n: u64| 100.0 * n as f64 / all as f64 == p;
            let Some(sum) = unique(p * all as f64 / 100.0, 0, all, formula) else {
                return Held::Unknown(format!(
                    "MAAS's progress {p}% for a file of {size} bytes on {regions} region controller(s) \
                     matches no single byte count"
                ));
            };
            if regions == 1 && sum < size {
                Held::Exact(sum)
            } else if regions == 1 {
                Held::Unknown(format!("MAAS holds all {size} bytes but does not call the file complete"))
            } else {
                Held::Unknown(format!(
                    "MAAS 3.5 and later count the bytes of all {regions} region controllers together \
                     ({sum} of {all}), so the bytes this region holds cannot be known"
                ))
            }
        }
    }
}

/// The one whole number in `lo..=hi` near `guess` for which `gives` holds.
fn unique(guess: f64, lo: u64, hi: u64, gives: impl Fn(u64) -> bool) -> Option<u64> {
    if !guess.is_finite() || guess < -1.0 || lo > hi {
        return None;
    }
    let centre = guess.round().max(0.0) as u64;
    let found: Vec<u64> =
        (centre.saturating_sub(2)..=centre.saturating_add(2)).filter(|n| (lo..=hi).contains(n) && gives(*n)).collect();
    match found[..] {
        [n] => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_regions() -> anyhow::Result<u64> {
        panic!("the region count was asked for")
    }

    #[test]
    fn the_large_file_line_gives_back_every_byte_count_exactly() {
        // 5.5 MiB, and a 4 GiB image held to all sorts of odd counts.
        for size in [5_767_168u64, 4 << 30] {
            for held_bytes in [1, 2, 1 << 20, (1 << 20) + 1, size / 3, size / 2, size - 1] {
                let p = size as f64 / held_bytes as f64;
                assert_eq!(
                    held(size, Progress::LargeFile(p), no_regions),
                    Held::Exact(held_bytes),
                    "{size} {held_bytes}"
                );
            }
        }
        assert_eq!(held(10, Progress::LargeFile(0.0), no_regions), Held::Exact(0));
    }

    #[test]
    fn the_sync_line_with_one_region_gives_back_every_byte_count_exactly() {
        let one = || Ok(1);
        for size in [5_767_168u64, (4 << 30) + 7] {
            for held_bytes in [1, 1 << 20, (3 << 20) + 5, size / 3, size - 1] {
                let p = 100.0 * held_bytes as f64 / size as f64;
                assert_eq!(held(size, Progress::Sync(p), one), Held::Exact(held_bytes), "{size} {held_bytes}");
            }
        }
        assert_eq!(held(10, Progress::Sync(0.0), no_regions), Held::Exact(0));
    }

    #[test]
    fn several_regions_or_a_float_no_count_gives_are_unknown() {
        let size = 5_767_168u64;
        let p = 100.0 * (2u64 << 20) as f64 / (size * 3) as f64;
        let Held::Unknown(why) = held(size, Progress::Sync(p), || Ok(3)) else { panic!("known") };
        assert!(why.contains("all 3 region controllers together (2097152 of 17301504)"), "{why}");
        // A percentage where MAAS 3.4 sends size / held: no count gives it.
        let Held::Unknown(why) = held(size, Progress::LargeFile(0.5), no_regions) else { panic!("known") };
        assert!(why.contains("matches no single byte count"), "{why}");
        let Held::Unknown(why) = held(size, Progress::Sync(100.0 / 3.0 + 1e-9), || Ok(1)) else { panic!("known") };
        assert!(why.contains("matches no single byte count"), "{why}");
        let Held::Unknown(why) = held(size, Progress::Sync(5.0), || anyhow::bail!("HTTP 403")) else { panic!() };
        assert!(why.contains("counting MAAS's region controllers: HTTP 403"), "{why}");
    }
}
