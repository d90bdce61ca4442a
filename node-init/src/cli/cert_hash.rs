//! `node-init cert-hash FILE`: kubeadm's CA pin of a certificate.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::exit;
use crate::pki;

#[derive(Debug, clap::Args)]
/// Print sha256:<hex> of each certificate's public key (SubjectPublicKeyInfo),
/// as kubeadm's --discovery-token-ca-cert-hash expects.
pub struct Args {
    /// A PEM file (one or more certificates) or a DER certificate.
    file: PathBuf,
}

pub fn run(a: Args) -> Result<u8> {
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let certs = pki::certificates_in_file(&bytes).with_context(|| format!("reading {}", a.file.display()))?;
    let mut out = String::new();
    for der in &certs {
        out.push_str(&pki::spki_sha256(der)?);
        out.push('\n');
    }
    super::print(&out)?;
    Ok(exit::OK)
}
