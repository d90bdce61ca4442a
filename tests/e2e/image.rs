//! `node-image build` against bases made by GNU tar from trees the test
//! writes: every entry type kept as it was, identity reset, the same bytes
//! twice, and bad inputs leaving nothing behind; what a run on the base
//! left (node-init's state, cloud-init's records, config drop-ins) left
//! out with its reason, a baked cluster secret refused, missing Kubernetes
//! tools named; and the command line's completions and man page.

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

/// What `node-init run --root` and a booted cloud-init leave in a root.
const RUN_LEFT: [(&str, &str); 7] = [
    ("var/lib/node-init/done", ""),
    ("var/lib/node-init/state.json", "{\"stages\": {}}\n"),
    ("var/lib/cloud/data/instance-id", "i-1\n"),
    ("var/lib/cloud/sem/config_scripts_per_once.once", ""),
    ("var/lib/cloud/scripts/per-boot/10-tune.sh", "#!/bin/sh\n"),
    ("var/lib/cloud/seed/nocloud/meta-data", "instance-id: base\n"),
    ("etc/node-init/config.d/10-node.yaml", "hostname: node1\n"),
];

/// A site-wide config, as `node-init run --root` bakes it.
const SITE: &str =
    "proxy:\n  http: http://proxy.example:3128\n  https: http://proxy.example:3128\ndns:\n  domain: maas\n";

const TOOLS: [(&str, &str); 4] = [
    ("usr/bin/containerd", "elf"),
    ("usr/bin/kubeadm", "elf"),
    ("usr/local/bin/kubelet", "elf"),
    ("usr/bin/kubectl", "elf"),
];

fn manifest(w: &TarBase, out: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(w.p(&format!("{out}.manifest.json"))).unwrap()).unwrap()
}

#[test]
fn a_base_that_ran_node_init_boots_it_again_and_the_manifest_says_what_was_left_out() {
    let mut files = RUN_LEFT.to_vec();
    files.push(("etc/node-init/config.yaml", SITE));
    files.extend(TOOLS);
    let w = TarBase::with(&files);
    let o = w.build("base.tar", "node-init", "a.tgz", "1800000000");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let after = w.listing("a.tgz");
    // The unit's ConditionPathExists=!/var/lib/node-init/done would skip
    // node-init on every machine.
    for gone in [
        "var/lib/node-init",
        "var/lib/node-init/done",
        "var/lib/node-init/state.json",
        "var/lib/cloud/data",
        "var/lib/cloud/data/instance-id",
        "var/lib/cloud/sem/config_scripts_per_once.once",
        "var/lib/cloud/instances",
        "etc/node-init/config.d/10-node.yaml",
    ] {
        assert!(!after.contains_key(gone), "{gone} was kept");
    }
    for kept in [
        "var/lib/cloud",
        "var/lib/cloud/scripts/per-boot/10-tune.sh",
        "var/lib/cloud/seed/nocloud/meta-data",
        "etc/node-init/config.yaml",
        "etc/node-init/config.d",
        "usr/bin/kubeadm",
    ] {
        assert!(after.contains_key(kept), "{kept} was left out");
    }
    let f = std::fs::File::open(w.p("a.tgz")).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut config = String::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("etc/node-init/config.yaml") {
            std::io::Read::read_to_string(&mut e, &mut config).unwrap();
        }
    }
    assert_eq!(config, SITE);

    let m = manifest(&w, "a.tgz");
    let why: Vec<(&str, Vec<&str>)> = m["removed_why"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["rule"].as_str().unwrap(), r["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect())
        })
        .collect();
    let rules: Vec<&str> = why.iter().map(|(r, _)| *r).collect();
    assert_eq!(rules, ["identity", "node-init-state", "cloud-init-data", "node-init-config.d"]);
    assert!(why[1].1.contains(&"var/lib/node-init/done") && why[3].1 == ["etc/node-init/config.d/10-node.yaml"]);
    for r in m["removed_why"].as_array().unwrap() {
        assert!(r["why"].as_str().is_some_and(|w| w.len() > 20), "{r}");
    }
    assert!(m["removed_why"][1]["why"].as_str().unwrap().contains("ConditionPathExists=!/var/lib/node-init/done"));
    let listed: usize = why.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(m["removed"].as_array().unwrap().len(), listed);
    assert_eq!(m["missing_tools"], serde_json::json!([]));
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
}

#[test]
fn a_baked_config_holding_a_cluster_secret_is_refused_by_its_key_and_never_shown() {
    for (yaml, key) in [
        ("kubernetes:\n  token: abcdef.0123456789abcdef\n", "kubernetes.token"),
        ("kubernetes:\n  certificate_key: SeCrEtKeY\n", "kubernetes.certificate_key"),
        ("kubernetes:\n  ca:\n    cert: public\n    key: SeCrEtKeY\n", "kubernetes.ca.key"),
    ] {
        let config = format!("{SITE}{yaml}");
        let w = TarBase::with(&[("etc/node-init/config.yaml", &config)]);
        let o = w.build("base.tar", "node-init", "out.tgz", "1800000000");
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains(&format!("{}: etc/node-init/config.yaml: holds {key} (", w.p("base.tar").display())),
            "{err}"
        );
        assert!(!err.contains("abcdef") && !err.contains("SeCrEt"), "the secret was shown: {err}");
        let left: Vec<_> = std::fs::read_dir(w.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("out.tgz"))
            .collect();
        assert!(left.is_empty(), "{key}: left {left:?}");
    }

    // The same from the overlays, before the base is read; and overlays
    // may not put back what an image never carries.
    let w = TarBase::new();
    for (path, content, expect) in [
        ("etc/node-init/config.yaml", "kubernetes:\n  token: abcdef.0123456789abcdef\n", "holds kubernetes.token"),
        ("var/lib/node-init/done", "", "overlays: var/lib/node-init is left out of every image (node-init-state)"),
    ] {
        let overlays = w.p("overlays");
        let _ = std::fs::remove_dir_all(&overlays);
        node_init_tests::run(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(node_init_tests::workspace().join("overlays"))
                .arg(&overlays),
        );
        std::fs::create_dir_all(overlays.join(path).parent().unwrap()).unwrap();
        std::fs::write(overlays.join(path), content).unwrap();
        let mut args = w.build_args("base.tar", "node-init", "out.tgz");
        let at = args.iter().position(|a| a == "--overlays").unwrap();
        args[at + 1] = overlays.display().to_string();
        let o = node_image(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_eq!(o.status.code(), Some(2), "{path}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(expect) && !text(&o.stderr).contains("abcdef"), "{}", text(&o.stderr));
        assert!(!w.p("out.tgz").exists());
    }
}

#[test]
fn a_base_without_the_kubernetes_tools_builds_with_a_warning_naming_them() {
    let w = TarBase::with(&TOOLS[1..]);
    let o = w.build("base.tar", "node-init", "a.tgz", "1800000000");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("warning: the image has no containerd (looked in /usr/bin and /usr/local/bin)"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(manifest(&w, "a.tgz")["missing_tools"], serde_json::json!(["containerd"]));

    let w = TarBase::new();
    let o = w.build("base.tar", "node-init", "b.tgz", "1800000000");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("the image has no containerd, kubeadm, kubelet, kubectl"), "{}", text(&o.stderr));
    assert_eq!(
        manifest(&w, "b.tgz")["missing_tools"],
        serde_json::json!(["containerd", "kubeadm", "kubelet", "kubectl"])
    );
}

#[test]
fn completions_and_the_man_page_render() {
    let bash = node_image(&["completions", "bash"], &[]);
    assert!(bash.status.success(), "{}", text(&bash.stderr));
    let script = text(&bash.stdout);
    assert!(script.contains("build") && script.contains("upload") && script.contains("--overlays"), "{script}");
    for shell in ["zsh", "fish"] {
        let o = node_image(&["completions", shell], &[]);
        assert!(o.status.success() && text(&o.stdout).contains("upload"), "{shell}: {}", text(&o.stderr));
    }
    let o = node_image(&["completions", "tcsh"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let man = node_image(&["man"], &[]);
    assert!(man.status.success(), "{}", text(&man.stderr));
    let page = text(&man.stdout);
    assert!(page.starts_with(".TH node-image 1"), "{page}");
    assert!(page.contains(".SH \"NODE-IMAGE UPLOAD\"") && page.contains("\\-\\-chunk\\-size"), "{page}");
}
