//! `node-image build` against bases made by GNU tar from trees the test
//! writes: every entry type kept as it was, identity reset, the same bytes
//! twice, and bad inputs leaving nothing behind.

use node_init_tests::tarbase::TarBase;
use node_init_tests::{node_image, text};

#[test]
fn every_entry_type_is_kept_identity_is_reset_and_builds_are_identical() {
    let w = TarBase::new();
    let epoch = "1800000000";
    for out in ["a.tgz", "b.tgz"] {
        let o = w.build("base.tar", "node-init", out, epoch);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    assert_eq!(std::fs::read(w.p("a.tgz")).unwrap(), std::fs::read(w.p("b.tgz")).unwrap(), "not reproducible");
    let sum = std::fs::read_to_string(w.p("a.tgz.sha256")).unwrap();
    assert!(sum.ends_with("  a.tgz\n") && sum.len() == 64 + 2 + 5 + 1, "{sum}");

    let before = w.listing("base.tar");
    let after = w.listing("a.tgz");
    let removed = [
        "etc/ssh/ssh_host_ed25519_key",
        "var/lib/cloud/instance",
        "var/lib/cloud/instances",
        "var/lib/cloud/instances/i-1",
        "var/lib/cloud/instances/i-1/user-data.txt",
        "var/lib/systemd/random-seed",
    ];
    let replaced = ["etc/machine-id", "usr/local/sbin/node-init"];
    for (path, line) in &before {
        if removed.contains(&path.as_str()) {
            assert!(!after.contains_key(path), "{path} was kept");
        } else if !replaced.contains(&path.as_str()) {
            // Everything else is listed exactly as GNU tar listed the base
            // (type, mode incl. setuid, numeric owner, size, mtime, link).
            assert_eq!(after.get(path), Some(line), "{path} changed");
        }
    }
    assert!(after["etc/machine-id"].starts_with("-r--r--r-- 0/0 0 "), "{}", after["etc/machine-id"]);
    assert!(
        after["usr/local/sbin/node-init"].starts_with("-rwxr-xr-x 0/0 122 "),
        "{}",
        after["usr/local/sbin/node-init"]
    );
    assert!(after["etc/node-init"].starts_with("drwx------ 0/0"), "{}", after["etc/node-init"]);
    assert!(after["etc/hostname"].contains("link to etc/hostname.hard"), "{}", after["etc/hostname"]);
    assert!(after.contains_key("etc/systemd/system/node-init.service"));
    assert!(after["etc/systemd/system/multi-user.target.wants/node-init.service"].contains("-> ../node-init.service"));

    // The xattr survives, read back by the tar crate.
    let f = std::fs::File::open(w.p("a.tgz")).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut found = false;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("usr/local/sbin/su") {
            let exts: Vec<(String, Vec<u8>)> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|x| x.unwrap())
                .map(|x| (x.key().unwrap().to_owned(), x.value_bytes().to_vec()))
                .collect();
            assert!(exts.contains(&("SCHILY.xattr.user.node-image-test".into(), b"kept".to_vec())), "{exts:?}");
            found = true;
        }
    }
    assert!(found);

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.p("a.tgz.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["replaced"], serde_json::json!(["etc/machine-id", "usr/local/sbin/node-init"]));
    assert_eq!(manifest["removed"].as_array().unwrap().len(), removed.len());
    assert_eq!(manifest["image"]["sha256"].as_str().unwrap(), &sum[..64]);
}

#[test]
fn mtimes_are_clamped_to_source_date_epoch() {
    let w = TarBase::new();
    let o = w.build("base.tar", "node-init", "c.tgz", "1700000000");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let after = w.listing("c.tgz");
    for (path, line) in after {
        let date = line.split_whitespace().nth(3).unwrap();
        assert!(date <= "2023-11-14", "{path}: {line}");
    }
}

#[test]
fn bad_inputs_fail_clearly_and_leave_no_output() {
    let w = TarBase::new();
    std::fs::write(w.p("junk.tar"), vec![b'x'; 4096]).unwrap();
    let tgz = std::fs::read(w.p("base.tar")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tgz).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(w.p("truncated.tar.gz"), &gz[..gz.len() / 2]).unwrap();
    std::fs::copy("/bin/sh", w.p("dynamic")).unwrap();
    for (base, binary, expect) in [
        ("junk.tar", "node-init", "is not a readable tar archive"),
        ("truncated.tar.gz", "node-init", "is not a readable tar archive"),
        ("base.tar", "dynamic", "is dynamically linked"),
        ("base.tar", "base.tar", "is not an ELF executable"),
    ] {
        let o = w.build(base, binary, "out.tgz", "1800000000");
        assert_eq!(o.status.code(), Some(1), "{base} {binary}");
        assert!(text(&o.stderr).contains(expect), "{base} {binary}: {}", text(&o.stderr));
        let left: Vec<_> = std::fs::read_dir(w.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("out.tgz"))
            .collect();
        assert!(left.is_empty(), "{base} {binary} left {left:?}");
    }
}

#[test]
fn without_source_date_epoch_the_base_newest_mtime_is_used() {
    let w = TarBase::new();
    let args = w.build_args("base.tar", "node-init", "d.tgz");
    let o = node_image(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut newest = 0;
    for e in tar::Archive::new(std::fs::File::open(w.p("base.tar")).unwrap()).entries().unwrap() {
        newest = newest.max(e.unwrap().header().mtime().unwrap());
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.p("d.tgz.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["source_date_epoch"], newest);
    let f = std::fs::File::open(w.p("d.tgz")).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let binary = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().ends_with("usr/local/sbin/node-init") && e.header().size().unwrap() == 122)
        .expect("the new binary");
    assert_eq!(binary.header().mtime().unwrap(), newest);
}
