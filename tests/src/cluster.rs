//! A cluster's material as its operator makes it with node-init:
//! `node-init secrets` into a private directory, then `node-init userdata`
//! for each role from the cluster's shared config and those secrets. Making
//! the secrets also checks what the command prints: the hash and the token
//! id, never a secret.

use std::path::PathBuf;

use crate::kube::ClusterCa;
use crate::{node_init, text};

/// A secrets directory `node-init secrets` made; removed when dropped.
pub struct Secrets {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Secrets {
    pub fn new() -> Self {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cluster-secrets");
        let out = node_init(&["secrets", "--out", &dir.display().to_string()]);
        assert!(out.status.success(), "secrets: {}", text(&out.stderr));
        let s = Self { _dir: d, dir };
        // It prints the hash and the token id, never a secret.
        let printed = text(&out.stdout) + &text(&out.stderr);
        let token = s.get("token");
        assert!(printed.contains(&s.get("ca-cert-hash")) && printed.contains(&token[..6]), "{printed}");
        for secret in [&token[7..], &s.get("certificate-key"), "PRIVATE KEY"] {
            assert!(!printed.contains(secret), "secrets printed a secret: {printed}");
        }
        s
    }

    /// One file's content, without its trailing newline.
    pub fn get(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap().trim_end().to_owned()
    }

    /// The directory as a `--secrets`/`--out` argument.
    pub fn arg(&self) -> String {
        self.dir.display().to_string()
    }

    /// The minted CA, to sign an API server's certificate with.
    pub fn cluster_ca(&self) -> ClusterCa {
        ClusterCa::from_pem(&self.get("ca.crt"), &std::fs::read_to_string(self.dir.join("ca.key")).unwrap())
    }
}

impl Default for Secrets {
    fn default() -> Self {
        Self::new()
    }
}

/// `node-init userdata --role ROLE` for `cluster_yaml` and `secrets`; it
/// must succeed.
pub fn userdata(role: &str, cluster_yaml: &str, secrets: &Secrets) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, cluster_yaml).unwrap();
    let out = node_init(&[
        "userdata",
        "--role",
        role,
        "--config",
        &cluster.display().to_string(),
        "--secrets",
        &secrets.arg(),
    ]);
    assert!(out.status.success(), "userdata --role {role}: {}", text(&out.stderr));
    text(&out.stdout)
}
