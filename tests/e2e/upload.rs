//! `node-image upload` against the MAAS API stand-in: OAuth on every
//! request, chunks stored in order, the sha256 checked by the stand-in on
//! the last byte, dropped connections that never make a byte go twice,
//! a second run that resumes, and refusals that say what was wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use node_init_tests::kube::ClusterCa;
use node_init_tests::maas::{Fault, Maas, Put, Version};
use node_init_tests::net::Background;
use node_init_tests::{node_image, workspace};

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

/// Every chunk stored once, at its own offset: nothing MAAS held was sent
/// again, whatever failed in between.
fn each_chunk_stored_once(puts: &[Put], size: usize) {
    let mut stored: Vec<u64> = puts.iter().filter(|p| p.outcome.starts_with("stored")).map(|p| p.offset).collect();
    stored.sort_unstable();
    let want: Vec<u64> = (0..size.div_ceil(MIB) as u64).map(|i| i * MIB as u64).collect();
    assert_eq!(stored, want, "{puts:?}");
}

#[test]
fn up_to_maas_3_4_the_exact_byte_is_resumed_whatever_the_regions() {
    for version in [Version::new(3, 3, 1), Version::new(3, 4, 1), Version::new(3, 4, 3)] {
        let bg = Background::new();
        let maas = Maas::start_as(&bg, KEY, version);
        let dir = tempfile::tempdir().unwrap();
        let (img, data) = image(dir.path());
        // The second chunk lands but its answer is lost; from the fourth
        // MAAS answers 503 until the run gives up.
        maas.fault(1, Fault::DropAfterStore);
        for i in 3..8 {
            maas.fault(i, Fault::Unavailable);
        }
        let first = upload(&maas, &img, &[]);
        assert_eq!(first.status.code(), Some(1), "{version:?}: {}", text(&first));
        assert!(text(&first).contains("giving up at byte 3145728 of 5767168"), "{version:?}: {}", text(&first));
        // MAAS 3.4 and earlier send size / bytes held, not a percentage.
        assert_eq!(maas.resources()[0].data.len(), 3 * MIB);

        // With several regions the bytes still live once, in the database;
        // without the upload record the create gives them back too.
        if version.regions > 1 {
            std::fs::remove_file(dir.path().join("pcg.tgz.upload.json")).unwrap();
        }
        let before = maas.puts().len();
        let second = upload(&maas, &img, &[]);
        assert!(second.status.success(), "{version:?}: {}", text(&second));
        assert!(text(&second).contains("MAAS holds 3145728 of 5767168 bytes"), "{version:?}: {}", text(&second));
        assert_eq!(offsets(&maas.puts()[before..]), [(3, "stored"), (4, "stored"), (5, "stored")], "{version:?}");
        each_chunk_stored_once(&maas.puts(), data.len());
        let [r] = &maas.resources()[..] else { panic!("{version:?}: one resource") };
        assert!(r.complete && r.data == data, "{version:?}: the sha256 check did not pass");
        assert!(!maas.requests().iter().any(|r| r.contains("regioncontrollers")), "{version:?}: regions asked");
        assert_no_key(&second);
    }
}

#[test]
fn from_maas_3_5_one_region_resumes_exactly_within_a_run_and_across_runs() {
    let bg = Background::new();
    let maas = Maas::start_as(&bg, KEY, Version::new(3, 5, 1));
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = image(dir.path());
    maas.fault(1, Fault::DropAfterStore);
    for i in 3..8 {
        maas.fault(i, Fault::Unavailable);
    }
    let first = upload(&maas, &img, &[]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    // After the lost answer MAAS said 2 MiB (its percentage, of one region).
    assert_eq!(offsets(&maas.puts()[..3]), [(0, "stored"), (1, "stored, then dropped"), (2, "stored")]);
    assert!(maas.requests().contains(&"GET /MAAS/api/2.0/regioncontrollers/".to_owned()));

    // A create would start a new file no region holds: the second run goes
    // on with the resource the record names instead.
    let (before, creates) = (maas.puts().len(), maas.requests().iter().filter(|r| r.starts_with("POST")).count());
    let second = upload(&maas, &img, &[]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(text(&second).contains("going on with resource") && text(&second).contains("MAAS holds 3145728 of"));
    assert_eq!(offsets(&maas.puts()[before..]), [(3, "stored"), (4, "stored"), (5, "stored")]);
    assert_eq!(maas.requests().iter().filter(|r| r.starts_with("POST")).count(), creates, "created again");
    each_chunk_stored_once(&maas.puts(), data.len());
    let [r] = &maas.resources()[..] else { panic!("one resource") };
    assert!(r.complete && r.data == data);

    let puts = maas.puts().len();
    let third = upload(&maas, &img, &[]);
    assert!(third.status.success() && text(&third).contains("MAAS already has custom/pcg"), "{}", text(&third));
    assert_eq!(maas.puts().len(), puts);
    assert_eq!(maas.requests().iter().filter(|r| r.starts_with("POST")).count(), creates);
}

#[test]
fn from_maas_3_5_without_the_record_a_create_starts_the_file_over_as_maas_does() {
    let bg = Background::new();
    let maas = Maas::start_as(&bg, KEY, Version::new(3, 5, 1));
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = image(dir.path());
    for i in 2..7 {
        maas.fault(i, Fault::Unavailable);
    }
    assert_eq!(upload(&maas, &img, &[]).status.code(), Some(1));
    let old = maas.resources()[0].file;
    std::fs::remove_file(dir.path().join("pcg.tgz.upload.json")).unwrap();
    let before = maas.puts().len();
    let second = upload(&maas, &img, &[]);
    assert!(second.status.success(), "{}", text(&second));
    // MAAS dropped the old file's sync rows: the new file is held nowhere,
    // so byte 0 is exact, and no offset is guessed from the old one.
    let [r] = &maas.resources()[..] else { panic!("one resource") };
    assert!(r.file != old && r.complete && r.data == data);
    assert_eq!(
        maas.puts()[before..].iter().map(|p| (p.offset / MIB as u64, p.file)).collect::<Vec<_>>(),
        (0..6).map(|i| (i, r.file)).collect::<Vec<_>>()
    );
}

#[test]
fn from_maas_3_5_with_three_regions_the_file_is_started_over_and_the_reason_printed() {
    let bg = Background::new();
    let maas = Maas::start_as(&bg, KEY, Version::new(3, 5, 3));
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = image(dir.path());
    // A lost answer: MAAS's percentage is of three regions' bytes.
    maas.fault(1, Fault::DropAfterStore);
    let first = upload(&maas, &img, &[]);
    assert!(first.status.success(), "{}", text(&first));
    let why = "starting resource 7's file over from byte 0: MAAS 3.5 and later count the bytes of all 3 region \
               controllers together (2097152 of 17301504), so the bytes this region holds cannot be known";
    assert!(text(&first).contains(why), "{}", text(&first));
    let puts = maas.puts();
    let [r] = &maas.resources()[..] else { panic!("one resource") };
    assert_eq!(offsets(&puts[..2]), [(0, "stored"), (1, "stored, then dropped")]);
    assert!(puts[..2].iter().all(|p| p.file != r.file), "{puts:?}");
    assert_eq!(
        puts[2..].iter().map(|p| (p.offset / MIB as u64, p.file)).collect::<Vec<_>>(),
        (0..6).map(|i| (i, r.file)).collect::<Vec<_>>()
    );
    // The sha256 passed on this region; MAAS calls it complete once the
    // other two regions copied it.
    assert!(r.data == data && !r.complete);
    maas.sync_regions();
    assert!(maas.resources()[0].complete);
    let n = maas.puts().len();
    let again = upload(&maas, &img, &[]);
    assert!(again.status.success() && text(&again).contains("MAAS already has custom/pcg"), "{}", text(&again));
    assert_eq!(maas.puts().len(), n);

    // A run interrupted half way (three chunks in, the fourth unanswered)
    // is started over by the next, which says why.
    let maas = Maas::start_as(&bg, KEY, Version::new(3, 5, 3));
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = image(dir.path());
    maas.fault(3, Fault::Hang);
    let mut first = Command::new(workspace().join("target/debug/node-image"))
        .args(["upload", "--maas", &maas.url(), "--name", "custom/pcg", "--chunk-size", "1048576"])
        .arg(&img)
        .env_clear()
        .env("MAAS_API_KEY", KEY)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while maas.puts().len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", maas.puts());
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(maas.resources()[0].data.len(), 3 * MIB);
    let before = maas.puts().len();
    let second = upload(&maas, &img, &[]);
    assert!(second.status.success(), "{}", text(&second));
    let why = "(3145728 of 17301504), so the bytes this region holds cannot be known";
    assert!(text(&second).contains(why), "{}", text(&second));
    assert!(!text(&second).contains("resuming there"), "{}", text(&second));
    let [r] = &maas.resources()[..] else { panic!("one resource") };
    assert!(r.data == data, "the sha256 check did not pass");
    assert_eq!(maas.puts()[before..].iter().map(|p| p.offset / MIB as u64).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    assert_no_key(&second);

    // Within a run, any chunk in doubt starts the file over: here a 503.
    let maas = Maas::start_as(&bg, KEY, Version::new(3, 5, 3));
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = image(dir.path());
    maas.fault(4, Fault::Unavailable);
    let out = upload(&maas, &img, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(4194304 of 17301504)"), "{}", text(&out));
    let [r] = &maas.resources()[..] else { panic!("one resource") };
    assert!(r.data == data);
    assert_eq!(
        maas.puts().iter().map(|p| (p.offset / MIB as u64, p.outcome.as_str())).collect::<Vec<_>>()[3..6],
        [(3, "stored"), (4, "503"), (0, "stored")]
    );
}
