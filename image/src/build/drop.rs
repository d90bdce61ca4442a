//! What an image never carries, rule by rule, each with the one reason the
//! manifest gives for it.
//!
//! A base is often a root that has already run once: `node-init run --root`
//! is the documented way to bake the proxy and its CA in, and a root taken
//! from a machine has cloud-init's records. Whatever records a run would
//! make every machine deployed from the image skip or misread its own first
//! boot, so the repack leaves it out of the base and refuses an overlay
//! that would put it back. Adding a rule is one entry in [`RULES`]; the
//! first rule a path matches is the one the manifest names.

use super::identity::is_identity;

/// A kind of path the image must not carry.
pub struct Rule {
    /// A short name, the manifest's key for the rule.
    pub name: &'static str,
    /// Why, in one sentence, for the manifest and for a refused overlay.
    pub why: &'static str,
    matches: fn(&str) -> bool,
}

pub const RULES: [Rule; 4] = [
    Rule {
        name: "identity",
        why: "it names one machine (SSH host keys, cloud-init's instance, random seeds); each machine makes its own at \
              first boot, as packer-maas resets them",
        matches: is_identity,
    },
    Rule {
        name: "node-init-state",
        why: "it is node-init's state from a run on the base: its done marker would skip node-init on every machine \
              (the unit's ConditionPathExists=!/var/lib/node-init/done)",
        matches: |p| under(p, "var/lib/node-init"),
    },
    Rule {
        name: "cloud-init-data",
        why: "it is cloud-init's data and instance records: every machine would take itself for the one that wrote them \
              (scripts/ and seed/ are kept, as `cloud-init clean` keeps seed/)",
        matches: |p| {
            p.strip_prefix("var/lib/cloud/").is_some_and(|rest| !under(rest, "scripts") && !under(rest, "seed"))
        },
    },
    Rule {
        name: "node-init-config.d",
        why: "a config drop-in belongs to one machine and comes with its user data, not with the image",
        matches: |p| p.starts_with("etc/node-init/config.d/"),
    },
];

/// The rule that keeps `path` (relative, no leading `./` or `/`) out of
/// the image, if any.
pub fn rule_for(path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| (r.matches)(path))
}

/// `path` is `top` or lies beneath it.
fn under(path: &str, top: &str) -> bool {
    path.strip_prefix(top).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str) -> Option<&'static str> {
        rule_for(path).map(|r| r.name)
    }

    #[test]
    fn node_init_state_and_cloud_init_data_are_dropped_whole() {
        for (path, name) in [
            ("var/lib/node-init", "node-init-state"),
            ("var/lib/node-init/done", "node-init-state"),
            ("var/lib/node-init/state.json", "node-init-state"),
            ("var/lib/cloud/instance", "identity"),
            ("var/lib/cloud/instances/i-1/user-data.txt", "identity"),
            ("var/lib/cloud/data", "cloud-init-data"),
            ("var/lib/cloud/data/instance-id", "cloud-init-data"),
            ("var/lib/cloud/sem/config_scripts_per_once.once", "cloud-init-data"),
            ("var/lib/cloud/scripts-old", "cloud-init-data"),
            ("etc/node-init/config.d/10-site.yaml", "node-init-config.d"),
            ("etc/ssh/ssh_host_rsa_key", "identity"),
        ] {
            assert_eq!(rule(path), Some(name), "{path}");
        }
    }

    #[test]
    fn cloud_init_scripts_and_seed_the_config_and_the_neighbours_stay() {
        for path in [
            "var/lib/cloud",
            "var/lib/cloud/scripts",
            "var/lib/cloud/scripts/per-boot/10-tune.sh",
            "var/lib/cloud/seed",
            "var/lib/cloud/seed/nocloud/meta-data",
            "var/lib/node-init-old",
            "var/lib/node-initx/done",
            "etc/node-init",
            "etc/node-init/config.yaml",
            "etc/node-init/config.d",
            "etc/machine-id",
        ] {
            assert_eq!(rule(path), None, "{path}");
        }
    }

    #[test]
    fn every_rule_has_its_own_name_and_a_reason() {
        let mut names: Vec<_> = RULES.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
        assert!(RULES.iter().all(|r| r.why.len() > 20 && !r.why.ends_with('.')));
    }
}
