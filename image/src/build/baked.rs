//! What the image is checked for on the way through: a baked node-init
//! config that holds no cluster secret, and the tools node-init configures.
//!
//! A site-wide `/etc/node-init/config.yaml` (proxy, CA, DNS) may ride in the
//! image, but one holding a bootstrap token, a certificate key or the CA's
//! key would put it on every machine deployed from it: [`check_config`]
//! refuses it as bad usage, naming the file and the key, never the value.
//! node-init sets up containerd, kubeadm, kubelet and kubectl and never
//! downloads them, so [`tool_at`] tells which of them the image carries and
//! the build warns about the rest.

use serde_json::Value;
use serde_saphyr::options::DuplicateKeyPolicy;

use crate::UsageError;

/// The baked config, relative to the image's root.
pub const CONFIG: &str = "etc/node-init/config.yaml";

/// The tools node-init configures but never installs.
pub const TOOLS: [&str; 4] = ["containerd", "kubeadm", "kubelet", "kubectl"];

/// Keys of one cluster's secrets, and what each is, as node-init's config
/// names them.
const SECRETS: [(&[&str], &str); 3] = [
    (&["kubernetes", "token"], "a bootstrap token"),
    (&["kubernetes", "certificate_key"], "a certificate key"),
    (&["kubernetes", "ca", "key"], "the cluster CA's private key"),
];

/// Refuses a baked config that holds a cluster secret, or that cannot be
/// read (then nothing shows it holds none). `origin` names the file.
pub fn check_config(bytes: &[u8], origin: &str) -> Result<(), UsageError> {
    let refuse = |why: String| UsageError(format!("{origin}: {why}"));
    let text = std::str::from_utf8(bytes)
        .map_err(|e| refuse(format!("not UTF-8 text (at byte {}), so build cannot check it", e.valid_up_to())))?;
    let options = serde_saphyr::options! { duplicate_keys: DuplicateKeyPolicy::Error };
    // Only the place of a YAML error is shown: its text may quote a value.
    let doc: Value = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let at = e.location().map(|l| format!(" at line {}, column {}", l.line(), l.column())).unwrap_or_default();
        refuse(format!("not valid YAML{at} (or a key given twice), so build cannot check it"))
    })?;
    let held: Vec<String> = SECRETS
        .iter()
        .filter(|(path, _)| path.iter().try_fold(&doc, |v, k| v.get(k)).is_some_and(|v| !v.is_null()))
        .map(|(path, what)| format!("{} ({what})", path.join(".")))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(refuse(format!(
        "holds {}: a baked config is on every machine deployed from the image; give each machine its cluster \
         secrets in its own user data (`node-init userdata`) and bake only site-wide settings",
        held.join(" and ")
    )))
}

/// The tool a path provides: `usr/bin/NAME` or `usr/local/bin/NAME`.
pub fn tool_at(path: &str) -> Option<&'static str> {
    let name = path.strip_prefix("usr/bin/").or_else(|| path.strip_prefix("usr/local/bin/"))?;
    TOOLS.into_iter().find(|t| *t == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "--base b.tar: etc/node-init/config.yaml";

    #[test]
    fn a_site_wide_config_passes() {
        let site = "proxy:\n  http: http://proxy.example:3128\n  ca_cert: |\n    -----BEGIN CERTIFICATE-----\n\
                    dns:\n  domain: maas\nkubernetes:\n  ca:\n    cert: x\n  token: null\n";
        check_config(site.as_bytes(), ORIGIN).expect("no secret");
        check_config(b"", ORIGIN).expect("empty");
        check_config(b"# nothing yet\n", ORIGIN).expect("a comment");
    }

    #[test]
    fn each_secret_is_named_by_its_key_and_never_shown() {
        for (yaml, key) in [
            ("kubernetes:\n  token: abcdef.0123456789abcdef\n", "kubernetes.token (a bootstrap token)"),
            ("kubernetes:\n  certificate_key: 'abcdef0123'\n", "kubernetes.certificate_key (a certificate key)"),
            ("kubernetes:\n  ca:\n    key: abcdef-KEY\n", "kubernetes.ca.key (the cluster CA's private key)"),
        ] {
            let UsageError(e) = check_config(yaml.as_bytes(), ORIGIN).expect_err(yaml);
            assert!(e.starts_with(ORIGIN) && e.contains(&format!("holds {key}:")), "{e}");
            assert!(!e.contains("abcdef"), "the value is shown: {e}");
        }
        let both = "kubernetes: {token: abcdef.0123456789abcdef, ca: {key: abcdef}}\n";
        let UsageError(e) = check_config(both.as_bytes(), ORIGIN).expect_err("two secrets");
        assert!(e.contains("holds kubernetes.token (a bootstrap token) and kubernetes.ca.key"), "{e}");
    }

    #[test]
    fn a_config_that_cannot_be_read_is_refused_without_its_text() {
        for bad in [
            &b"kubernetes:\n  token: abcdef.0123456789abcdef\n  token: abcdef.0123456789abcdef\n"[..],
            b"kubernetes: [abcdef\n",
            b"kubernetes:\n  token: \xff\xfeabcdef\n",
        ] {
            let UsageError(e) = check_config(bad, ORIGIN).expect_err("unreadable");
            assert!(e.contains("so build cannot check it") && !e.contains("abcdef"), "{e}");
        }
    }

    #[test]
    fn tools_are_found_in_usr_bin_and_usr_local_bin_only() {
        assert_eq!(tool_at("usr/bin/containerd"), Some("containerd"));
        assert_eq!(tool_at("usr/local/bin/kubeadm"), Some("kubeadm"));
        assert_eq!(tool_at("usr/bin/kubectl"), Some("kubectl"));
        for path in ["usr/sbin/kubelet", "usr/bin/containerd-shim", "opt/bin/kubeadm", "usr/bin/kubelet/x"] {
            assert_eq!(tool_at(path), None, "{path}");
        }
    }
}
