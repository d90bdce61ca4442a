//! What goes into an event's text: every body ASCII (MAAS decodes it as
//! ASCII and answers 400 otherwise), every secret of the config and the
//! node's own tokens scrubbed from descriptions and files, and the files of
//! a failure encoded as MAAS's `_retrieve_content` decodes them: base64,
//! bzip2-compressed when large.

use std::io::Write as _;

use base64::Engine as _;

use super::File;
use crate::config::{Config, Member};

/// Files larger than this are bzip2-compressed (MAAS accepts `bzip2`).
const COMPRESS_OVER: usize = 1024;

/// JSON text with every non-ASCII character as a `\u` escape (UTF-16
/// surrogate pairs above the BMP). Outside strings JSON is ASCII already,
/// so this is exact.
pub fn ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The secrets to scrub: every one the config holds, in every spelling
/// it may be written in, longest first so a secret inside another is
/// covered by the longer one's replacement.
#[derive(Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    pub fn new(config: &Config, extra: &[&str]) -> Self {
        let mut s: Vec<String> = extra.iter().map(|x| (*x).to_owned()).collect();
        if let Some(k) = &config.kubernetes {
            if let Some(t) = k.token() {
                s.push(format!("{}.{}", t.id, t.secret.expose()));
                s.push(t.secret.expose().clone());
            }
            if let Some(ck) = k.certificate_key() {
                s.push(ck.0.expose().clone());
            }
            if let Member::Init { ca, .. } = &k.member {
                let pem = ca.key.0.expose();
                s.push(pem.clone());
                // A key's body lines, in case one is quoted alone.
                s.extend(
                    pem.lines().map(str::trim).filter(|l| l.len() >= 16 && !l.starts_with("-----")).map(str::to_owned),
                );
            }
        }
        let proxies = config.proxy.iter().flat_map(|p| [&p.http, &p.https]).flatten();
        for url in proxies.filter_map(|p| url::Url::parse(p.expose()).ok()) {
            if let Some(pw) = url.password() {
                s.push(pw.to_owned());
                s.push(percent_encoding::percent_decode_str(pw).decode_utf8_lossy().into_owned());
            }
        }
        s.retain(|x| !x.is_empty());
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        s.dedup();
        Self { secrets: s }
    }

    pub fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |t, s| if t.contains(s.as_str()) { t.replace(s.as_str(), "<redacted>") } else { t })
    }
}

/// A file for MAAS: base64, and bzip2 first when large. Compression that
/// fails (it cannot, in memory) leaves the file uncompressed.
pub fn file(path: &str, data: &[u8]) -> File {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    if data.len() > COMPRESS_OVER {
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        if let Ok(packed) = enc.write_all(data).and_then(|()| enc.finish()) {
            return File {
                path: path.to_owned(),
                encoding: "base64".into(),
                compression: Some("bzip2".into()),
                content: b64(&packed),
            };
        }
    }
    File { path: path.to_owned(), encoding: "base64".into(), compression: None, content: b64(data) }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn decoded(f: &File) -> Vec<u8> {
        let raw = base64::engine::general_purpose::STANDARD.decode(&f.content).unwrap();
        match f.compression.as_deref() {
            None => raw,
            Some("bzip2") => {
                let mut out = Vec::new();
                bzip2::read::BzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
                out
            }
            Some(other) => panic!("compression {other}"),
        }
    }

    #[test]
    fn small_files_are_plain_base64_and_large_ones_bzip2() {
        let small = file("node-init-status.json", b"{\"done\": false}");
        assert_eq!((small.encoding.as_str(), small.compression.as_deref()), ("base64", None));
        assert_eq!(decoded(&small), b"{\"done\": false}");
        let log: Vec<u8> =
            (0..2000).flat_map(|i| format!("line {i} INFO stage{{stage=\"dns\"}}\n").into_bytes()).collect();
        let big = file("node-init.log", &log);
        assert_eq!(big.compression.as_deref(), Some("bzip2"));
        assert!(big.content.len() < log.len() / 4, "{} of {}", big.content.len(), log.len());
        assert_eq!(decoded(&big), log);
    }

    #[test]
    fn ascii_escapes_exactly_what_is_not_ascii() {
        let text = serde_json::to_string(&serde_json::json!({"d": "caf\u{e9} \u{1F600} \"q\""})).unwrap();
        let a = ascii(&text);
        assert_eq!(a, r#"{"d":"caf\u00e9 \ud83d\ude00 \"q\""}"#);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&a).unwrap()["d"], "caf\u{e9} \u{1F600} \"q\"");
    }

    #[test]
    fn every_secret_of_the_config_is_scrubbed() {
        let (cert, key_pem) = crate::pki::new_ca().unwrap();
        let yaml = format!(
            "proxy:\n  http: http://ops:p%40ss%3Aword@10.0.0.1:3128\nkubernetes:\n  role: init\n  endpoint: 10.0.0.100:6443\n  \
             token: abcdef.0123456789abcdef\n  certificate_key: {}\n  ca:\n    cert: |\n{}    key: |\n{}",
            "a".repeat(64),
            node_init_tests::yaml_block(&cert, 6),
            node_init_tests::yaml_block(&key_pem, 6),
        );
        let config = crate::config::parse(&yaml, "test").unwrap_or_else(|e| panic!("{e}"));
        let s = Scrubber::new(&config, &["Tk9token"]);
        let body_line = key_pem.lines().nth(1).unwrap();
        let text = format!(
            "token abcdef.0123456789abcdef, secret 0123456789abcdef, key {}, ca {key_pem}, line {body_line}, \
             proxy p%40ss%3Aword / p@ss:word, maas Tk9token",
            "a".repeat(64)
        );
        let out = s.scrub(&text);
        for secret in ["0123456789abcdef", &"a".repeat(64), body_line, "p%40ss", "p@ss:word", "Tk9token"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.starts_with("token <redacted>, secret <redacted>"), "{out}");
    }
}
