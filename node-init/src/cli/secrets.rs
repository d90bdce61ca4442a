//! `node-init secrets --out DIR`: everything a cluster needs before its
//! first machine is deployed: a cluster CA, a bootstrap token, a
//! certificate key and the CA's pin. `userdata --secrets DIR` reads them.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::UsageError;
use crate::pki;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TOKEN: &str = "token";
pub const CERT_KEY: &str = "certificate-key";
pub const CA_HASH: &str = "ca-cert-hash";

/// Every file, with its mode: secrets 0600, the rest 0644.
const FILES: [(&str, u32); 5] =
    [(CA_CERT, 0o644), (CA_KEY, 0o600), (TOKEN, 0o600), (CERT_KEY, 0o600), (CA_HASH, 0o644)];

/// The CA lives ten years, as kubeadm's own.
const CA_DAYS: i64 = 3650;

#[derive(Debug, clap::Args)]
/// Mint a cluster's secrets: a CA (ECDSA P-256, ten years), a bootstrap
/// token, a certificate key and the CA hash. Secret files are 0600;
/// existing secrets are never overwritten.
pub struct Args {
    /// Directory to write into (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<u8> {
    let taken: Vec<String> =
        FILES.iter().map(|(f, _)| a.out.join(f)).filter(|p| p.exists()).map(|p| p.display().to_string()).collect();
    if !taken.is_empty() {
        return Err(UsageError(format!("refusing to overwrite existing secrets: {}", taken.join(", "))).into());
    }
    let (cert_pem, key_pem) = new_ca()?;
    let der = pki::pem_certificates(cert_pem.as_bytes())?.remove(0);
    let hash = pki::spki_sha256(&der)?;
    let token = format!("{}.{}", random_chars(6)?, random_chars(16)?);
    let cert_key = hex::encode(random_bytes::<32>()?);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&a.out)
        .with_context(|| format!("creating {}", a.out.display()))?;
    let contents = [cert_pem, key_pem, format!("{token}\n"), format!("{cert_key}\n"), format!("{hash}\n")];
    for ((name, mode), content) in FILES.iter().zip(&contents) {
        write_new(&a.out.join(name), content.as_bytes(), *mode)?;
    }
    let id = token.split('.').next().unwrap_or_default();
    super::print(&format!(
        "wrote {dir}/{{{files}}}\nCA hash:  {hash}\ntoken id: {id}\n",
        dir = a.out.display(),
        files = FILES.map(|(f, _)| f).join(",")
    ))?;
    Ok(crate::exit::OK)
}

/// Creates `path` with `mode` from the start (never briefly readable by
/// others), failing if it exists.
fn write_new(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", path.display()))
}

fn new_ca() -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the CA key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "kubernetes");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).context("signing the CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("the system's random source: {e}"))?;
    Ok(b)
}

/// `n` characters of `[a-z0-9]`, uniformly (bytes past the largest
/// multiple of 36 are drawn again).
fn random_chars(n: usize) -> Result<String> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes::<32>()? {
            if b < 252 && out.len() < n {
                out.push(char::from(ALPHABET[usize::from(b % 36)]));
            }
        }
    }
    Ok(out)
}

/// The secrets `userdata` puts into a node's config.
pub struct Secrets {
    pub ca_cert: String,
    pub ca_key: String,
    pub token: String,
    pub cert_key: String,
    pub ca_hash: String,
}

impl Secrets {
    pub fn read(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<String> {
            let p = dir.join(name);
            std::fs::read_to_string(&p)
                .map_err(|e| UsageError(format!("--secrets: cannot read {}: {e}", p.display())).into())
        };
        Ok(Self {
            ca_cert: read(CA_CERT)?,
            ca_key: read(CA_KEY)?,
            token: read(TOKEN)?.trim().to_owned(),
            cert_key: read(CERT_KEY)?.trim().to_owned(),
            ca_hash: read(CA_HASH)?.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_have_kubeadm_shape_and_differ() {
        let a = random_chars(16).unwrap();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{a}");
        assert_ne!(a, random_chars(16).unwrap());
        let token = format!("{}.{}", random_chars(6).unwrap(), random_chars(16).unwrap());
        assert!(token.parse::<crate::config::values::Token>().is_ok());
    }

    #[test]
    fn the_ca_is_a_ten_year_ca_whose_key_matches() {
        let (cert, key) = new_ca().unwrap();
        let der = pki::pem_certificates(cert.as_bytes()).unwrap().remove(0);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        pki::check_ca(&der, now).unwrap();
        pki::check_ca(&der, now + (CA_DAYS - 1) * 86400).unwrap();
        assert!(pki::check_ca(&der, now + (CA_DAYS + 1) * 86400).is_err());
        assert!(pki::key_matches_certificate(&der, key.as_bytes()).unwrap());
    }
}
