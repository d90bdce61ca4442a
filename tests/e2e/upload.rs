//! `node-image upload` against the MAAS API stand-in: OAuth on every
//! request, chunks stored in order, the sha256 checked by the stand-in on
//! the last byte, dropped connections that never make a byte go twice,
//! a second run that resumes, and refusals that say what was wrong.

use std::path::{Path, PathBuf};
use std::process::Output;

use node_init_tests::kube::ClusterCa;
use node_init_tests::maas::{Fault, Maas, Put};
use node_init_tests::net::Background;
use node_init_tests::node_image;

const KEY: &str = "Xq7consumerKey2k9A:Tk3tokenKey8fHq2W:S3cr3tTokenSecretWithSomeLength9";
const MIB: usize = 1 << 20;

/// 5.5 MiB of bytes that differ from chunk to chunk, so a chunk sent at
/// the wrong offset changes the sha256.
fn image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..5 * MIB + MIB / 2)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let path = dir.join("pcg.tgz");
    std::fs::write(&path, &data).expect("image");
    (path, data)
}

fn upload(maas: &Maas, image: &Path, extra: &[&str]) -> Output {
    let url = maas.url();
    let img = image.display().to_string();
    let mut args = vec!["upload", "--maas", &url, "--name", "custom/pcg", "--chunk-size", "1048576"];
    args.extend_from_slice(extra);
    args.push(&img);
    node_image(&args, &[("MAAS_API_KEY", KEY)])
}

/// stdout and stderr together.
fn text(out: &Output) -> String {
    format!("{}{}", node_init_tests::text(&out.stdout), node_init_tests::text(&out.stderr))
}

fn offsets(puts: &[Put]) -> Vec<(u64, &str)> {
    puts.iter().map(|p| (p.offset / MIB as u64, p.outcome.as_str())).collect()
}

fn assert_no_key(out: &Output) {
    let all = text(out);
    for part in KEY.split(':') {
        assert!(!all.contains(part), "a part of the API key reached the output:\n{all}");
    }
}

#[test]
fn dropped_connections_are_resumed_from_what_maas_holds() {
    let bg = Background::new();
    let maas = Maas::start(&bg, KEY);
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = image(dir.path());
    // The third chunk lands but its answer is lost; the fifth is lost.
    maas.fault(2, Fault::DropAfterStore);
    maas.fault(4, Fault::DropBeforeStore);
    // And the region is not ready for the first create.
    maas.fail_creates(1);

    let out = upload(&maas, &img, &["--title", "PCG bookworm"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        offsets(&maas.puts()),
        [
            (0, "stored"),
            (1, "stored"),
            (2, "stored, then dropped"),
            // MAAS said it holds 3 MiB: the third chunk is not sent again.
            (3, "stored"),
            (4, "dropped before storing"),
            (4, "stored"),
            (5, "stored"),
        ],
        "{}",
        text(&out)
    );
    let [r] = &maas.resources()[..] else { panic!("one resource: {:?}", maas.requests()) };
    assert!(r.complete, "the stand-in's sha256 check did not pass");
    assert!(r.data == data, "MAAS holds other bytes than the image");
    assert_eq!(
        (r.name.as_str(), r.title.as_str(), r.architecture.as_str(), r.base_image.as_str(), r.filetype.as_str()),
        ("custom/pcg", "PCG bookworm", "amd64/generic", "ubuntu/jammy", "tgz")
    );
    assert_eq!(r.size, data.len() as u64);
    // Two creates, a GET after each failed PUT, the PUTs; all signed.
    let gets = maas.requests().iter().filter(|r| r.starts_with("GET ")).count();
    assert_eq!((maas.requests().len(), gets), (2 + 2 + 7, 2), "{:?}", maas.requests());
    assert!(text(&out).contains("boot-resources/: HTTP 503 Service Unavailable; trying again"), "{}", text(&out));
    assert!(maas.auth_failures().is_empty(), "{:?}", maas.auth_failures());
    assert!(text(&out).contains(&format!("{} bytes", data.len())), "{}", text(&out));
    assert_eq!(text(&out).matches("asking MAAS where the upload stands").count(), 2, "{}", text(&out));
    assert!(text(&out).contains("chunk at byte 2097152: PUT http"), "{}", text(&out));
    assert_no_key(&out);
}

#[test]
fn a_second_run_resumes_and_a_third_finds_it_done() {
    let bg = Background::new();
    let maas = Maas::start(&bg, KEY);
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = image(dir.path());

    // MAAS takes two chunks, then answers 503 until the upload gives up.
    for i in 2..7 {
        maas.fault(i, Fault::Unavailable);
    }
    let first = upload(&maas, &img, &[]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let err = text(&first);
    assert!(
        err.contains("giving up at byte 2097152 of 5767168 after 5 failures in a row")
            && err.contains("HTTP 503 Service Unavailable")
            && err.contains("run the same command again to resume"),
        "{err}"
    );
    let held = maas.resources()[0].data.len();
    assert_eq!(held, 2 * MIB);
    assert_no_key(&first);

    let before = maas.puts().len();
    let second = upload(&maas, &img, &[]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(text(&second).contains("MAAS holds 2097152 of 5767168 bytes"), "{}", text(&second));
    assert_eq!(offsets(&maas.puts()[before..]), [(2, "stored"), (3, "stored"), (4, "stored"), (5, "stored")]);
    let [r] = &maas.resources()[..] else { panic!("one resource") };
    assert!(r.complete && r.data == data);

    let puts = maas.puts().len();
    let third = upload(&maas, &img, &[]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(text(&third).contains("MAAS already has custom/pcg"), "{}", text(&third));
    assert_eq!(maas.puts().len(), puts, "a complete image was sent again");
    assert!(maas.auth_failures().is_empty(), "{:?}", maas.auth_failures());
}

#[test]
fn bad_keys_and_answers_are_named_and_the_key_never_shown() {
    let bg = Background::new();
    let maas = Maas::start(&bg, KEY);
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = image(dir.path());
    let url = maas.url();
    let img_s = img.display().to_string();

    // A malformed key: exit 2 before anything is read or sent.
    let bad = "Xq7consumerKey2k9A:S3cr3tTokenSecretWithSomeLength9";
    let out = node_image(&["upload", "--maas", &url, "--name", "custom/pcg", &img_s], &[("MAAS_API_KEY", bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--api-key: expected consumer:token:secret"), "{}", text(&out));
    assert!(!text(&out).contains("S3cr3t"), "{}", text(&out));
    assert!(maas.requests().is_empty());

    // A wrong token: MAAS's answer quotes it; the output does not.
    let wrong = "Xq7consumerKey2k9A:Tk3WRONGtokenKey8f:S3cr3tTokenSecretWithSomeLength9";
    let out = node_image(&["upload", "--maas", &url, "--name", "custom/pcg", "--api-key", wrong, &img_s], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("HTTP 401 Unauthorized (MAAS did not accept the API key"), "{}", text(&out));
    assert!(!text(&out).contains("WRONG") && !text(&out).contains("S3cr3t"), "{}", text(&out));
    assert_eq!(maas.auth_failures(), ["Invalid access token: Tk3WRONGtokenKey8f"]);

    // A wrong secret.
    let wrong = "Xq7consumerKey2k9A:Tk3tokenKey8fHq2W:notTheSecret";
    let out = node_image(&["upload", "--maas", &url, "--name", "custom/pcg", "--api-key", wrong, &img_s], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("notTheSecret"), "{}", text(&out));
    assert_eq!(maas.auth_failures().last().map(String::as_str), Some("Invalid signature."));

    // MAAS's own validation error, word for word.
    let out = upload(&maas, &img, &["--architecture", "arm64/generic"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("HTTP 400 Bad Request: {\"architecture\":[\"Select a valid choice. arm64/generic"),
        "{}",
        text(&out)
    );

    // An image that no longer matches the sha256 `build` wrote.
    std::fs::write(dir.path().join("pcg.tgz.sha256"), format!("{}  pcg.tgz\n", "0".repeat(64))).unwrap();
    let n = maas.requests().len();
    let out = upload(&maas, &img, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the image changed after it was built"), "{}", text(&out));
    assert_eq!(maas.requests().len(), n, "a changed image was sent");

    // Nothing listens: the POST is retried, then the URL is named.
    drop(bg);
    std::fs::remove_file(dir.path().join("pcg.tgz.sha256")).unwrap();
    let out = node_image(
        &["upload", "--maas", "http://127.0.0.1:9/MAAS", "--name", "custom/pcg", &img_s],
        &[("MAAS_API_KEY", KEY)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("POST http://127.0.0.1:9/MAAS/api/2.0/boot-resources/: cannot connect: Connection refused")
            && text(&out).contains("(5 attempts)"),
        "{}",
        text(&out)
    );
    assert_no_key(&out);
}

#[test]
fn an_https_region_is_trusted_through_ca_cert_and_refused_without_it() {
    let bg = Background::new();
    let ca = ClusterCa::named("MAAS region test CA");
    let maas = Maas::start_tls(&bg, KEY, &ca);
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = image(dir.path());
    let url = maas.https_url();
    let img_s = img.display().to_string();

    // The region's CA is in no trust store: the handshake fails, and says so.
    let out = node_image(&["upload", "--maas", &url, "--name", "custom/pcg", &img_s], &[("MAAS_API_KEY", KEY)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Not retried: a certificate the trust store rejects stays rejected.
    assert!(text(&out).contains("UnknownIssuer") && text(&out).contains("pass it with --ca-cert"), "{}", text(&out));
    assert!(!text(&out).contains("trying again"), "{}", text(&out));
    assert!(maas.requests().is_empty(), "a request got through an untrusted handshake");

    let pem = dir.path().join("maas-ca.pem");
    std::fs::write(&pem, &ca.cert_pem).unwrap();
    let pem_s = pem.display().to_string();
    let out = node_image(
        &["upload", "--maas", &url, "--name", "custom/pcg", "--ca-cert", &pem_s, &img_s],
        &[("MAAS_API_KEY", KEY)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let [r] = &maas.resources()[..] else { panic!("one resource") };
    assert!(r.complete && r.data == data);
    assert!(maas.auth_failures().is_empty(), "{:?}", maas.auth_failures());

    // A --ca-cert that holds no certificate is named, and nothing is sent.
    std::fs::write(&pem, "not a certificate\n").unwrap();
    let n = maas.requests().len();
    let out = node_image(
        &["upload", "--maas", &url, "--name", "custom/pcg", "--ca-cert", &pem_s, &img_s],
        &[("MAAS_API_KEY", KEY)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--ca-cert:") && text(&out).contains("holds no certificate"), "{}", text(&out));
    assert_eq!(maas.requests().len(), n);
}
