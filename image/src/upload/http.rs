//! The HTTP client node-image talks to MAAS with, and how its failures are
//! worded.
//!
//! [`client`] trusts the system's store plus an optional `--ca-cert` PEM
//! bundle (rustls with ring, no OpenSSL), and bounds every request in time.
//! [`chain`] turns a reqwest error into what happened ("cannot connect:
//! Connection refused"); [`untrusted`] tells a refused certificate, which
//! no retry can fix, from a failure worth another try.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::blocking::Client;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per request: a 4 MiB chunk at 1 Mbit/s still fits.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub fn client(ca_cert: Option<&Path>) -> anyhow::Result<Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    // A missing or partly unreadable system store is not fatal: an http
    // URL needs none, and --ca-cert may be all an https one needs.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("--ca-cert: reading {}", path.display()))?;
        let mut n = 0;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.with_context(|| format!("--ca-cert: {} is not a PEM bundle", path.display()))?;
            roots.add(cert).with_context(|| format!("--ca-cert: a certificate in {} is unusable", path.display()))?;
            n += 1;
        }
        if n == 0 {
            bail!("--ca-cert: {} holds no certificate", path.display());
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("node-image/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// Whether the server's certificate was refused. rustls says why, inside
/// io::Errors whose `source()` skips the error they carry, hence `get_ref`.
pub fn untrusted(e: &reqwest::Error) -> bool {
    fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
        if matches!(err.downcast_ref::<rustls::Error>(), Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        let carried = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        carried.is_some_and(|inner| refused(inner)) || err.source().is_some_and(refused)
    }
    refused(e)
}

/// What went wrong with a request, in words: reqwest's own message only
/// repeats the URL, the innermost cause says what happened.
pub fn chain(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(c) = cause.source() {
        cause = c;
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "reading the answer"
    } else {
        "the request failed"
    };
    format!("{what}: {cause}")
}
