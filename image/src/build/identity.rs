//! Per-machine identity in an image, reset as packer-maas does: what the
//! repack leaves out of the base and what it empties.
//!
//! An image is deployed to many machines; anything that names one machine
//! (SSH host keys, cloud-init's instance state, random seeds) must not ride
//! along. `/etc/machine-id` is emptied rather than removed, so systemd
//! makes a new one at first boot. Whatever is left out is listed as
//! `removed` in the manifest.

use std::collections::BTreeMap;

use super::New;

/// Replaced by an empty file: systemd writes a fresh id into it.
pub const MACHINE_ID: &str = "etc/machine-id";

/// Adds the emptied `/etc/machine-id` to the new entries, over any overlay.
pub fn reset(new: &mut BTreeMap<String, New>) {
    new.insert(MACHINE_ID.to_owned(), New::File { mode: 0o444, data: Vec::new() });
}

/// Per-machine identity, removed as packer-maas does. (`/etc/machine-id`
/// is replaced by an empty file instead, so systemd makes a new one.)
pub fn is_identity(path: &str) -> bool {
    path.starts_with("etc/ssh/ssh_host_")
        || path == "var/lib/cloud/instance"
        || path == "var/lib/cloud/instances"
        || path.starts_with("var/lib/cloud/instances/")
        || path == "var/lib/systemd/random-seed"
        || path == "var/lib/urandom/random-seed"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_instance_state_and_seeds_are_identity_and_their_neighbours_are_not() {
        for path in [
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_rsa_key.pub",
            "var/lib/cloud/instance",
            "var/lib/cloud/instances",
            "var/lib/cloud/instances/i-123/user-data.txt",
            "var/lib/systemd/random-seed",
            "var/lib/urandom/random-seed",
        ] {
            assert!(is_identity(path), "{path} kept");
        }
        for path in ["etc/ssh/sshd_config", "var/lib/cloud/instances-old", "var/lib/cloud/data", MACHINE_ID] {
            assert!(!is_identity(path), "{path} dropped");
        }
    }

    #[test]
    fn machine_id_is_emptied_over_any_overlay() {
        let mut new = BTreeMap::from([(MACHINE_ID.to_owned(), New::File { mode: 0o644, data: b"abc\n".to_vec() })]);
        reset(&mut new);
        assert!(matches!(&new[MACHINE_ID], New::File { mode: 0o444, data } if data.is_empty()), "{new:?}");
    }
}
