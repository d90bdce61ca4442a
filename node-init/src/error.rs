//! The errors a caller matches on, and the one way an error is printed on
//! one line.
//!
//! Two kinds end a command with exit 2 ("nothing was changed"): a rejected
//! configuration ([`crate::config::ConfigError`], which names the key) and
//! bad usage that clap cannot see ([`UsageError`]: an unknown stage name, a
//! root that is not a directory). Everything else is a failure (exit 1).
//! The library only returns these; `cli` maps them to exit codes.

/// Bad usage that clap cannot see: exit 2, nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Is this error, anywhere in its chain, bad input (a rejected config or bad
/// usage) rather than a failure?
pub fn is_bad_input(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<crate::config::ConfigError>() || c.is::<UsageError>())
}

/// An error with its causes on one line, each cause once: libraries often
/// repeat their source's text in their own message.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: inner")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn chain_names_each_cause_once() {
        let e = Repeats(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
        let e = anyhow::Error::from(std::io::Error::other("disk")).context("reading x");
        assert_eq!(chain(e.as_ref()), "reading x: disk");
    }

    #[test]
    fn usage_and_config_errors_are_bad_input_anywhere_in_the_chain() {
        let e = anyhow::Error::from(UsageError("unknown stage".into())).context("selecting");
        assert!(is_bad_input(&e));
        assert!(!is_bad_input(&anyhow::anyhow!("kubeadm failed")));
    }
}
