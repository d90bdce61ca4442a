//! X.509 helpers: PEM bundles, CA validation, kubeadm's CA pin, and the
//! minting of a cluster's CA and random secrets.
//!
//! The pin is `sha256:` + hex of SHA-256 over the certificate's whole DER
//! SubjectPublicKeyInfo (outer SEQUENCE included), exactly what kubeadm's
//! `--discovery-token-ca-cert-hash` and `openssl x509 -pubkey | openssl pkey
//! -pubin -outform der | sha256sum` compute.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use ::time as clock;

/// The DER of every `CERTIFICATE` block in `pem`, each checked to parse.
/// Fails when there is none, or when a block is not a certificate.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (i, block) in x509_parser::pem::Pem::iter_from_buffer(pem).enumerate() {
        let block = block.map_err(|e| anyhow::anyhow!("PEM block {}: {e}", i + 1))?;
        if block.label != "CERTIFICATE" {
            bail!("PEM block {} is a {}, not a CERTIFICATE", i + 1, block.label);
        }
        X509Certificate::from_der(&block.contents)
            .map_err(|e| anyhow::anyhow!("PEM block {}: not an X.509 certificate: {e}", i + 1))?;
        out.push(block.contents);
    }
    if out.is_empty() {
        bail!("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)");
    }
    Ok(out)
}

/// A certificate file as PEM (one or more) or a single DER certificate.
pub fn certificates_in_file(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        return pem_certificates(bytes);
    }
    X509Certificate::from_der(bytes).map_err(|e| anyhow::anyhow!("neither PEM nor a DER certificate: {e}"))?;
    Ok(vec![bytes.to_vec()])
}

/// `sha256:<hex>` of the certificate's DER SubjectPublicKeyInfo.
pub fn spki_sha256(der: &[u8]) -> Result<String> {
    let (_, cert) = X509Certificate::from_der(der).context("parsing certificate")?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(cert.public_key().raw))))
}

/// Checks that a certificate can serve as a trust anchor now: CA:TRUE in
/// basicConstraints and `now` (Unix seconds) inside its validity window.
pub fn check_ca(der: &[u8], now: i64) -> Result<()> {
    let (_, cert) = X509Certificate::from_der(der).context("parsing certificate")?;
    let subject = cert.subject().to_string();
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    if !is_ca {
        bail!("certificate {subject:?} is not a CA (basicConstraints CA:TRUE missing)");
    }
    let v = cert.validity();
    if now < v.not_before.timestamp() {
        bail!("certificate {subject:?} is not valid before {}", v.not_before);
    }
    if now > v.not_after.timestamp() {
        bail!("certificate {subject:?} expired on {}", v.not_after);
    }
    Ok(())
}

/// Checks that `pem` holds exactly one private key block, without keeping
/// or printing any of it.
/// Whether a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) is the one
/// whose public half is in the certificate.
pub fn key_matches_certificate(cert_der: &[u8], key_pem: &[u8]) -> Result<bool> {
    let (_, cert) = X509Certificate::from_der(cert_der).context("parsing certificate")?;
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
    let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| anyhow::anyhow!("not a PEM private key"))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|_| anyhow::anyhow!("unusable private key (expected RSA, ECDSA or Ed25519)"))?;
    let spki = key.public_key().ok_or_else(|| anyhow::anyhow!("the private key does not give its public key"))?;
    Ok(spki.as_ref() == cert.public_key().raw)
}

pub fn check_private_key_pem(pem: &[u8]) -> Result<()> {
    let mut keys = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|_| anyhow::anyhow!("not a PEM document"))?;
        if !block.label.ends_with("PRIVATE KEY") {
            bail!("PEM block is a {}, expected a PRIVATE KEY", block.label);
        }
        if block.contents.is_empty() {
            bail!("PEM private key is empty");
        }
        keys += 1;
    }
    match keys {
        1 => Ok(()),
        0 => bail!("no PEM private key found (expected -----BEGIN PRIVATE KEY-----)"),
        n => bail!("{n} private keys found, expected one"),
    }
}

/// The CA lives ten years, as kubeadm's own.
pub const CA_DAYS: i64 = 3650;

/// One DER certificate as PEM.
pub fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A new cluster CA (ECDSA P-256, `CA_DAYS`), as PEM certificate and key.
pub fn new_ca() -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the CA key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "kubernetes");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    let now = clock::OffsetDateTime::now_utc();
    params.not_before = now - clock::Duration::minutes(5);
    params.not_after = now + clock::Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).context("signing the CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `N` bytes from the system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("the system's random source: {e}"))?;
    Ok(b)
}

/// `n` characters of `[a-z0-9]`, uniformly (bytes past the largest
/// multiple of 36 are drawn again).
pub fn random_chars(n: usize) -> Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/pki/");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}{name}")).unwrap()
    }

    #[test]
    fn keys_in_every_kubeadm_format_are_matched_to_their_certificate() {
        let rsa = pem_certificates(&fixture("ca-rsa.crt")).unwrap().remove(0);
        let ec = pem_certificates(&fixture("ca-ec.crt")).unwrap().remove(0);
        assert!(key_matches_certificate(&rsa, &fixture("ca-rsa-pkcs1.key")).unwrap());
        assert!(key_matches_certificate(&ec, &fixture("ca-ec-sec1.key")).unwrap());
        assert!(!key_matches_certificate(&rsa, &fixture("ca-ec-sec1.key")).unwrap());
        assert!(!key_matches_certificate(&ec, &fixture("ca-rsa-pkcs1.key")).unwrap());
        assert!(key_matches_certificate(&ec, b"not a key").is_err());
    }

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
        let der = pem_certificates(cert.as_bytes()).unwrap().remove(0);
        let now = clock::OffsetDateTime::now_utc().unix_timestamp();
        check_ca(&der, now).unwrap();
        check_ca(&der, now + (CA_DAYS - 1) * 86400).unwrap();
        assert!(check_ca(&der, now + (CA_DAYS + 1) * 86400).is_err());
        assert!(key_matches_certificate(&der, key.as_bytes()).unwrap());
    }
}
