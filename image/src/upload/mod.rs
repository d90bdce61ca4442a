//! `node-image upload`: a MAAS custom image, uploaded as the maas CLI does
//! (`POST /api/2.0/boot-resources/` with the image's sha256 and size, then
//! the bytes in chunks with `PUT` to the file's `upload_uri`), every request
//! signed with OAuth 1.0 PLAINTEXT. A chunk that fails is retried after
//! asking MAAS how much it holds, so a dropped connection never sends a byte
//! twice, and a second run resumes where an earlier one stopped; both only
//! where MAAS's answer gives the offset exactly (MAAS 3.4 and earlier
//! always, 3.5 and later with one region controller). Elsewhere the file is
//! started over, and the reason printed.
//!
//! The arguments are checked into a [`Plan`] before the image is read or
//! anything is sent; what is wrong with them comes back as a
//! [`UsageError`] (exit 2). `oauth` signs, `http` is the client, `maas`
//! speaks the boot-resources API and `resource` reads its answers,
//! `offset` recovers the bytes MAAS holds, `record` remembers the resource
//! beside the image, `session` picks the resource and the offset, `chunks`
//! sends the bytes; this file checks the arguments and the image.

mod chunks;
mod http;
mod maas;
mod oauth;
mod offset;
mod record;
mod resource;
mod session;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use reqwest::Url;
use sha2::{Digest, Sha256};

use self::chunks::Chunks;
use self::maas::Maas;
use self::oauth::ApiKey;
use self::record::Record;
use self::session::Session;
use crate::UsageError;

/// The maas CLI's chunk size.
const CHUNK: usize = 4 << 20;

#[derive(Debug, clap::Args)]
/// Upload an image to MAAS as a custom boot resource.
///
/// Resumes a partial upload of the same image (same name, architecture and
/// sha256) where MAAS's answer gives the exact offset, and starts the file
/// over where it does not (MAAS 3.5+ with several region controllers).
/// IMAGE.upload.json beside the image records the resource for the next
/// run. With IMAGE.sha256 beside the image (as `build` writes it), the
/// image must match it.
pub struct Args {
    /// The MAAS URL, e.g. http://maas.example:5240/MAAS.
    #[arg(long, value_name = "URL")]
    pub maas: String,
    /// The MAAS API key, consumer:token:secret (`maas apikey --username U`).
    /// Prefer the environment variable: arguments are visible in ps.
    #[arg(long, env = "MAAS_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: String,
    /// The boot resource's name, custom/NAME.
    #[arg(long, value_name = "custom/NAME")]
    pub name: String,
    /// The title MAAS shows (default: NAME).
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long, default_value = "amd64/generic", value_name = "ARCH/SUBARCH")]
    pub architecture: String,
    /// The MAAS image the custom image is built on (kernel and OS family).
    #[arg(long, default_value = "ubuntu/jammy", value_name = "OS/RELEASE")]
    pub base_image: String,
    /// A PEM bundle to trust for an https MAAS URL, besides the system's
    /// trust store.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Bytes per PUT request.
    #[arg(long, default_value_t = CHUNK, value_name = "BYTES")]
    pub chunk_size: usize,
    /// The image (a gzip tar, as `build` writes it).
    #[arg(value_name = "IMAGE.tgz")]
    pub image: PathBuf,
}

/// What the arguments say, checked before anything is read or sent.
struct Plan {
    api: Url,
    key: ApiKey,
    fields: Vec<(&'static str, String)>,
    chunk: usize,
}

fn plan(a: &Args) -> Result<Plan, UsageError> {
    let key = ApiKey::parse(&a.api_key).map_err(|e| UsageError(format!("--api-key: {e}")))?;
    let mut base = Url::parse(a.maas.trim()).map_err(|e| UsageError(format!("--maas {:?}: not a URL: {e}", a.maas)))?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(UsageError(format!("--maas {:?}: expected http(s)://HOST[:PORT]/MAAS", a.maas)));
    }
    if !base.username().is_empty() || base.password().is_some() || base.query().is_some() {
        return Err(UsageError(format!(
            "--maas {:?}: no credentials or query in the URL; the key goes in --api-key",
            a.maas
        )));
    }
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let api = base.join("api/2.0/").map_err(|e| UsageError(format!("--maas {:?}: {e}", a.maas)))?;
    let short = a
        .name
        .strip_prefix("custom/")
        .ok_or_else(|| UsageError(format!("--name {:?}: expected custom/NAME", a.name)))?;
    if short.is_empty() || !short.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err(UsageError(format!("--name {:?}: NAME may hold letters, digits, '-', '.' and '_' only", a.name)));
    }
    for (flag, v) in [("--architecture", &a.architecture), ("--base-image", &a.base_image)] {
        let mut parts = v.split('/');
        let ok = parts.next().is_some_and(|p| !p.is_empty()) && parts.next().is_some_and(|p| !p.is_empty());
        if !ok || parts.next().is_some() {
            return Err(UsageError(format!("{flag} {v:?}: expected two parts, like amd64/generic or ubuntu/jammy")));
        }
    }
    if a.title.as_deref().is_some_and(|t| t.is_empty() || t.chars().any(char::is_control)) {
        return Err(UsageError("--title: expected a non-empty line of text".to_owned()));
    }
    if a.chunk_size == 0 || a.chunk_size > 1 << 30 {
        return Err(UsageError(format!("--chunk-size {}: expected 1 byte to 1 GiB", a.chunk_size)));
    }
    let fields = vec![
        ("name", a.name.clone()),
        ("title", a.title.clone().unwrap_or_else(|| short.to_owned())),
        ("architecture", a.architecture.clone()),
        ("filetype", "tgz".to_owned()),
        ("base_image", a.base_image.clone()),
    ];
    Ok(Plan { api, key, fields, chunk: a.chunk_size })
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let plan = plan(a)?;
    let (size, sha256) = digest(&a.image)?;
    check_sidecar(&a.image, &sha256)?;
    if size == 0 {
        bail!("{}: the image is empty", a.image.display());
    }
    let maas = Maas::new(plan.api, plan.key, a.ca_cert.as_deref())?;
    let mut fields = plan.fields;
    fields.push(("sha256", sha256.clone()));
    fields.push(("size", size.to_string()));
    let mut session = Session::new(maas, fields, sha256.clone(), size, Record::load(&a.image));

    let mut target = session.open()?;
    let id = target.id;
    if target.file.complete {
        eprintln!("node-image: MAAS already has {} (resource {id}, sha256 {sha256}); nothing to upload", a.name);
        return Ok(());
    }
    session.count_regions(&target.file)?;
    let offset = session.offset(&mut target)?;
    let image = File::open(&a.image).with_context(|| format!("opening {}", a.image.display()))?;
    if offset > 0 {
        eprintln!("node-image: MAAS holds {offset} of {size} bytes of resource {id}; resuming there");
    }
    let started = Instant::now();
    let chunks = Chunks { session: &mut session, target, image, path: &a.image, chunk: plan.chunk };
    let (sent_chunks, id) = chunks.send_from(offset)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "node-image: uploaded {} to {} as resource {id}: {size} bytes, sha256 {sha256}, {sent_chunks} chunk(s) in {secs:.1}s",
        a.image.display(),
        a.name
    );
    Ok(())
}

fn digest(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok((size, hex::encode(h.finalize())));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

/// IMAGE.sha256 beside the image, when present, must name the same hash.
fn check_sidecar(image: &Path, sha256: &str) -> anyhow::Result<()> {
    let mut side = image.as_os_str().to_owned();
    side.push(".sha256");
    let side = PathBuf::from(side);
    let text = match std::fs::read_to_string(&side) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", side.display())),
    };
    let recorded = text.split_whitespace().next().unwrap_or_default();
    if recorded != sha256 {
        bail!(
            "{} has sha256 {sha256} but {} says {recorded:?}: the image changed after it was built",
            image.display(),
            side.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(key: &str) -> Args {
        Args {
            maas: "http://maas.example:5240/MAAS".into(),
            api_key: key.into(),
            name: "custom/pcg-bookworm".into(),
            title: None,
            architecture: "amd64/generic".into(),
            base_image: "ubuntu/jammy".into(),
            ca_cert: None,
            chunk_size: CHUNK,
            image: "image.tgz".into(),
        }
    }

    #[test]
    fn key_errors_name_the_flag_and_never_the_key() {
        for (key, why) in [
            ("abc:def", "got 2 part(s)"),
            ("abc:def:ghi:jkl", "got 4 part(s)"),
            ("abc::ghi", "token part is empty"),
            ("abc:def:", "secret part is empty"),
            ("abc:d ef:ghi", "token part holds a space"),
        ] {
            let Err(UsageError(e)) = plan(&args(key)) else { panic!("{key:?} accepted") };
            assert!(e.starts_with("--api-key: ") && e.contains(why), "{key:?}: {e}");
            assert!(!e.contains("def") && !e.contains("ghi"), "{key:?}: the error shows the key: {e}");
        }
    }

    #[test]
    fn arguments_are_checked_before_anything_is_sent() {
        let ok = plan(&args("c:t:s")).expect("good arguments");
        assert_eq!(ok.api.as_str(), "http://maas.example:5240/MAAS/api/2.0/");
        assert!(ok.fields.contains(&("title", "pcg-bookworm".to_owned())));
        for (edit, flag) in [
            (&(|a: &mut Args| a.maas = "maas.example".into()) as &dyn Fn(&mut Args), "--maas"),
            (&|a: &mut Args| a.maas = "ftp://maas/MAAS".into(), "--maas"),
            (&|a: &mut Args| a.maas = "http://u:p@maas/MAAS".into(), "--maas"),
            (&|a: &mut Args| a.name = "pcg".into(), "--name"),
            (&|a: &mut Args| a.name = "custom/a/b".into(), "--name"),
            (&|a: &mut Args| a.architecture = "amd64".into(), "--architecture"),
            (&|a: &mut Args| a.base_image = "ubuntu/jammy/x".into(), "--base-image"),
            (&|a: &mut Args| a.chunk_size = 0, "--chunk-size"),
            (&|a: &mut Args| a.title = Some("two\r\nlines".into()), "--title"),
        ] {
            let mut a = args("c:t:s");
            edit(&mut a);
            let UsageError(e) = plan(&a).err().unwrap_or_else(|| panic!("accepted: {a:?}"));
            assert!(e.starts_with(flag), "{flag}: {e}");
        }
    }

    #[test]
    fn bad_arguments_exit_2_before_the_image_is_read() {
        // The image does not exist: reaching it would be a different error.
        let mut a = args("c:t:s");
        a.image = "/nonexistent/image.tgz".into();
        a.name = "pcg".into();
        let e = run(&a).expect_err("a bad --name");
        assert_eq!(crate::exit_code(&e), 2, "{e:#}");
        assert_eq!(format!("{e:#}"), "--name \"pcg\": expected custom/NAME");
        a.name = "custom/pcg".into();
        let e = run(&a).expect_err("a missing image");
        assert_eq!(crate::exit_code(&e), 1, "{e:#}");
        assert!(format!("{e:#}").starts_with("opening /nonexistent/image.tgz: "), "{e:#}");
    }
}
