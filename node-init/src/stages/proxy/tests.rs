//! Sandbox tests: a temp root, a recording runner, golden files under
//! `tests/fixtures/proxy/` (regenerate with `NODE_INIT_UPDATE_GOLDEN=1`).

use std::path::PathBuf;

use super::*;
use crate::config;
use crate::pipeline::{Node, Outcome};
use crate::root::Root;
use crate::runner::Recording;

const CONFIG: &str = r#"
proxy:
  http: http://proxyuser:pa%24%24word@10.0.0.1:3128
  https: http://proxyuser:pa%24%24word@10.0.0.1:3128
  no_proxy: [maas.company.com, 10.10.0.0/16, .corp]
kubernetes:
  role: worker
  endpoint: 10.11.12.100:6443
  token: abcdef.0123456789abcdef
  ca_cert_hashes: ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
"#;

struct Sandbox {
    _dir: tempfile::TempDir,
    root: Root,
    runner: Recording,
}

impl Sandbox {
    fn new(os_release: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        root.write("/etc/os-release", os_release.as_bytes(), 0o644).unwrap();
        root.write("/etc/environment", b"PATH=\"/usr/local/sbin:/usr/bin\"\nLANG=C.UTF-8\n", 0o644).unwrap();
        Self { _dir: dir, root, runner: Recording::new() }
    }

    fn run(&self, config: &config::Config) -> anyhow::Result<Outcome> {
        let mut cx = Context::new(&self.root, config, &self.runner, false).unwrap();
        cx.node = Node {
            fqdn: Some("node1.maas".into()),
            addresses: vec!["10.11.12.21".parse().unwrap()],
            maas_server: Some("10.11.12.2".into()),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(ProxyStage.run(&cx))
    }

    fn read(&self, path: &str) -> String {
        self.root.read_string_opt(path).unwrap().unwrap_or_else(|| panic!("{path} missing"))
    }

    /// Every file under the root, with its bytes, for before/after checks.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() { walk(&p, out) } else { out.push((p.clone(), std::fs::read(&p).unwrap())) }
            }
        }
        let mut out = Vec::new();
        walk(self.root.base(), &mut out);
        out.sort();
        out
    }
}

const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
const RHEL: &str = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n";

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/proxy").join(name);
    if std::env::var_os("NODE_INIT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

fn mint_ca() -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Test Proxy CA");
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert.der().to_vec())
}

#[test]
fn debian_files_match_their_golden_files() {
    let s = Sandbox::new(DEBIAN);
    let cfg = config::parse(CONFIG, "t").unwrap();
    assert!(matches!(s.run(&cfg).unwrap(), Outcome::Done(_)));
    golden("environment", &s.read(ENVIRONMENT));
    golden("profile.sh", &s.read(PROFILE));
    golden("apt.conf", &s.read(APT));
    golden("system.conf", &s.read(MANAGER));
    golden("service-drop-in.conf", &s.read(DROP_INS[0]));
    assert_eq!(s.read(DROP_INS[0]), s.read(DROP_INS[1]));
    assert!(s.runner.calls().is_empty(), "no CA configured: no trust store update");
}

#[test]
fn rerun_changes_nothing_and_removal_restores_the_root() {
    let s = Sandbox::new(DEBIAN);
    let before = s.snapshot();
    let cfg = config::parse(CONFIG, "t").unwrap();
    s.run(&cfg).unwrap();
    let after = s.snapshot();
    s.run(&cfg).unwrap();
    assert_eq!(s.snapshot(), after, "a rerun is byte-identical");

    let off = config::parse("", "t").unwrap();
    assert!(matches!(s.run(&off).unwrap(), Outcome::Done(_)));
    assert_eq!(s.snapshot(), before, "turning the proxy off removes exactly what was written");
    assert!(matches!(s.run(&off).unwrap(), Outcome::Skipped(_)));
}

#[test]
fn password_files_are_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::new(DEBIAN);
    s.run(&config::parse(CONFIG, "t").unwrap()).unwrap();
    let mode = |p: &str| std::fs::metadata(s.root.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(APT), 0o600);
    assert_eq!(mode(MANAGER), 0o600);
    assert_eq!(mode(DROP_INS[0]), 0o600);
    assert_eq!(mode(PROFILE), 0o644);
}

#[test]
fn ca_goes_to_the_anchor_dir_and_must_reach_the_bundle() {
    let s = Sandbox::new(DEBIAN);
    let (pem, der) = mint_ca();
    let cfg = config::parse(&format!("proxy:\n  ca_cert: |\n{}", indent(&pem)), "t").unwrap();
    // The recording runner does not really update the bundle: the check fails.
    let err = format!("{:#}", s.run(&cfg).unwrap_err());
    assert!(err.contains("does not hold the proxy CA"), "{err}");
    assert_eq!(s.runner.argvs(), ["update-ca-certificates"]);
    let anchor = s.read("/usr/local/share/ca-certificates/node-init-proxy-ca.crt");
    assert_eq!(crate::pki::pem_certificates(anchor.as_bytes()).unwrap(), std::slice::from_ref(&der));

    // Once the bundle holds it, the stage passes; a rerun runs nothing.
    s.root.write("/etc/ssl/certs/ca-certificates.crt", trust::pem_encode(&der).as_bytes(), 0o644).unwrap();
    s.run(&cfg).unwrap();
    assert_eq!(s.runner.argvs().len(), 1, "anchor unchanged and bundle complete: no update");
}

#[test]
fn a_missing_update_tool_fails_with_its_stderr() {
    let s = Sandbox::new(DEBIAN);
    let (pem, _) = mint_ca();
    let cfg = config::parse(&format!("proxy:\n  ca_cert: |\n{}", indent(&pem)), "t").unwrap();
    s.runner.answer(127, "", "chroot: failed to run command 'update-ca-certificates': No such file or directory");
    let err = format!("{:#}", s.run(&cfg).unwrap_err());
    assert!(err.contains("`update-ca-certificates` exited with 127: chroot: failed to run command"), "{err}");
}

#[test]
fn rhel_family_uses_its_paths_and_commands() {
    let s = Sandbox::new(RHEL);
    s.root.write(DNF, b"[main]\ngpgcheck=1\n", 0o644).unwrap();
    let (pem, der) = mint_ca();
    s.root.write("/etc/pki/tls/certs/ca-bundle.crt", trust::pem_encode(&der).as_bytes(), 0o644).unwrap();
    let doc = format!("proxy:\n  https: http://10.0.0.1:3128\n  ca_cert: |\n{}", indent(&pem));
    let cfg = config::parse(&doc, "t").unwrap();
    s.run(&cfg).unwrap();
    assert_eq!(s.runner.argvs(), ["update-ca-trust extract"]);
    assert!(s.root.exists("/etc/pki/ca-trust/source/anchors/node-init-proxy-ca.crt"));
    golden("dnf.conf", &s.read(DNF));
    assert!(!s.root.exists(APT));
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}
