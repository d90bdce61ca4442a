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
    let minted = mint(&a.out)?;
    super::print(&format!(
        "wrote {dir}/{{{files}}}\nCA hash:  {hash}\ntoken id: {id}\n",
        dir = a.out.display(),
        files = FILES.map(|(f, _)| f).join(","),
        hash = minted.ca_hash,
        id = minted.token_id,
    ))?;
    Ok(super::exit::OK)
}

/// What [`mint`] tells about the secrets it wrote: nothing secret.
pub struct Minted {
    pub ca_hash: String,
    pub token_id: String,
}

/// Mints a cluster's secrets into `out` (created 0700), refusing to
/// overwrite any file.
pub fn mint(out: &Path) -> Result<Minted> {
    let taken: Vec<String> =
        FILES.iter().map(|(f, _)| out.join(f)).filter(|p| p.exists()).map(|p| p.display().to_string()).collect();
    if !taken.is_empty() {
        return Err(UsageError(format!("refusing to overwrite existing secrets: {}", taken.join(", "))).into());
    }
    let s = Secrets::generate()?;
    s.write(out)?;
    let token_id = s.token.split('.').next().unwrap_or_default().to_owned();
    Ok(Minted { ca_hash: s.ca_hash, token_id })
}

/// Whether `dir` holds every file [`mint`] writes.
pub fn complete(dir: &Path) -> bool {
    FILES.iter().all(|(f, _)| dir.join(f).is_file())
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

/// The secrets `userdata` puts into a node's config.
pub struct Secrets {
    pub ca_cert: String,
    pub ca_key: String,
    pub token: String,
    pub cert_key: String,
    pub ca_hash: String,
}

impl Secrets {
    /// New secrets, in memory.
    pub fn generate() -> Result<Self> {
        let (ca_cert, ca_key) = pki::new_ca()?;
        let der = pki::pem_certificates(ca_cert.as_bytes())?.remove(0);
        let ca_hash = pki::spki_sha256(&der)?;
        let token = format!("{}.{}", pki::random_chars(6)?, pki::random_chars(16)?);
        let cert_key = hex::encode(pki::random_bytes::<32>()?);
        Ok(Self { ca_cert, ca_key, token, cert_key, ca_hash })
    }

    /// Writes every file into `out` (created 0700), each created anew.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .with_context(|| format!("creating {}", out.display()))?;
        let contents = [
            self.ca_cert.clone(),
            self.ca_key.clone(),
            format!("{}\n", self.token),
            format!("{}\n", self.cert_key),
            format!("{}\n", self.ca_hash),
        ];
        for ((name, mode), content) in FILES.iter().zip(&contents) {
            write_new(&out.join(name), content.as_bytes(), *mode)?;
        }
        Ok(())
    }

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
