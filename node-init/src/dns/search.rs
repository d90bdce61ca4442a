//! The names glibc's stub resolver asks for a name as a program wrote it:
//! resolv.conf's `search` (or `domain`) list and `options ndots:N`, applied
//! as `res_nsearch` does. node-init itself never searches (every name it
//! asks is absolute); this exists so `verify` can see what kubelet,
//! containerd and every other glibc program on the node would be answered.

use crate::root::Root;

/// resolv.conf's search rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// Suffixes, in order, without the trailing dot.
    pub domains: Vec<String>,
    /// A name with at least this many dots is first asked as it is.
    pub ndots: usize,
}

impl Search {
    /// The rules in resolv.conf text. `search` and `domain` replace each
    /// other, the last line winning; with neither, the domain is the part of
    /// `hostname` after its first dot (glibc's `res_init`). ndots is capped
    /// at 15 as glibc caps it.
    pub fn parse(text: &str, hostname: &str) -> Self {
        let mut domains = None;
        let mut ndots = 1;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search") => domains = Some(words.map(bare).filter(|d| !d.is_empty()).collect()),
                Some("domain") => domains = Some(words.next().map(bare).into_iter().collect()),
                Some("options") => {
                    for n in words.filter_map(|w| w.strip_prefix("ndots:")) {
                        ndots = n.parse::<usize>().map_or(ndots, |n| n.min(15));
                    }
                }
                _ => {}
            }
        }
        let from_host = || hostname.trim().split_once('.').map(|(_, d)| bare(d)).filter(|d| !d.is_empty());
        Self { domains: domains.unwrap_or_else(|| from_host().into_iter().collect()), ndots }
    }

    /// The node's own rules: `/etc/resolv.conf` and the kernel hostname.
    pub fn of(root: &Root) -> anyhow::Result<Self> {
        let text = root.read_string_opt(super::RESOLV_CONF)?.unwrap_or_default();
        let host = root.read_string_opt("/proc/sys/kernel/hostname")?.unwrap_or_default();
        Ok(Self::parse(&text, &host))
    }

    /// The absolute names glibc asks for `name`, in its order: a name
    /// ending in a dot is asked only as it is; one with ndots or more dots
    /// as it is first, then with each suffix; one with fewer, with each
    /// suffix first and as it is last.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if name.ends_with('.') {
            return vec![bare(name)];
        }
        let suffixed = self.domains.iter().map(|d| format!("{name}.{d}"));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(name.to_owned()).chain(suffixed).collect()
        } else {
            suffixed.chain(std::iter::once(name.to_owned())).collect()
        }
    }
}

fn bare(d: &str) -> String {
    d.trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_of_search_and_domain_wins() {
        let s = Search::parse("domain a.example\nsearch b.example. c.example\nnameserver 10.0.0.2\n", "");
        assert_eq!(s.domains, ["b.example", "c.example"]);
        let s = Search::parse("search b.example c.example\ndomain a.example\n", "");
        assert_eq!(s.domains, ["a.example"]);
        assert_eq!(s.ndots, 1);
    }

    #[test]
    fn without_either_the_hostnames_domain_is_searched() {
        assert_eq!(Search::parse("nameserver 10.0.0.2\n", "node1.dc1.example\n").domains, ["dc1.example"]);
        assert!(Search::parse("", "node1\n").domains.is_empty());
    }

    #[test]
    fn ndots_decides_whether_the_name_is_asked_first_or_last() {
        // Ubuntu's resolv.conf behind systemd-resolved, with a MAAS domain.
        let s = Search::parse("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example maas\n", "");
        assert_eq!(s.candidates("x.maas"), ["x.maas", "x.maas.corp.example", "x.maas.maas"]);
        assert_eq!(s.candidates("x.maas."), ["x.maas"]);
        assert_eq!(s.candidates("api"), ["api.corp.example", "api.maas", "api"]);
        // Kubernetes pods' ndots:5.
        let s = Search::parse("search svc.cluster.local\noptions ndots:5 timeout:1\n", "");
        assert_eq!(s.ndots, 5);
        assert_eq!(s.candidates("x.maas"), ["x.maas.svc.cluster.local", "x.maas"]);
        assert_eq!(Search::parse("options ndots:99\n", "").ndots, 15);
    }
}
