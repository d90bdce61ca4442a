//! The Debian packaging the patch stage meets: a test package built with
//! `dpkg-deb` (its version 2 asks for a reboot as Debian's kernel packages
//! do), a flat repository indexed by `apt-ftparchive`, and the root's own
//! dpkg to install and query it. The real-rootfs tier serves the
//! repository from inside the root; the VM tier behind a proxy.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::rootfs::chroot;
use crate::run;

/// The package the tests upgrade.
pub const PKG: &str = "node-init-testpkg";

/// Builds `PKG_VERSION_all.deb` in `out`; version 2's postinst asks for a
/// reboot the way Debian's kernel packages do.
pub fn deb(out: &Path, version: &str) -> PathBuf {
    let reboot = format!(
        "mkdir -p /var/run\n  echo '*** System restart required ***' > /var/run/reboot-required\n  \
         echo {PKG} >> /var/run/reboot-required.pkgs\n"
    );
    package(out, PKG, version, (version == "2").then_some(reboot.as_str()))
}

/// `PKG` at `version` as a real upgrade set weighs: `payload` random
/// bytes (incompressible, so the download is that size) and a postinst
/// that works for a while as a kernel's does (update-initramfs compresses
/// the new initramfs: here gzip over the payload), then, with `reboot`,
/// asks for a reboot as a kernel's postinst does.
pub fn deb_weighing(out: &Path, version: &str, payload: usize, reboot: bool) -> PathBuf {
    let dir = out.join(format!("{PKG}-{version}-payload"));
    std::fs::create_dir_all(dir.join("usr/lib").join(PKG)).unwrap();
    let mut bytes = vec![0; payload];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    std::fs::write(dir.join("usr/lib").join(PKG).join("payload"), bytes).unwrap();
    let mut postinst = format!(
        "gzip -6 -c /usr/lib/{PKG}/payload > /var/lib/{PKG}.initrd
  "
    );
    if reboot {
        postinst += &format!(
            "mkdir -p /var/run
  echo '*** System restart required ***' > /var/run/reboot-required
               echo {PKG} >> /var/run/reboot-required.pkgs
"
        );
    }
    build(out, &dir, PKG, version, Some(&postinst), &["-Zgzip", "-z1"])
}

/// Builds `NAME_VERSION_all.deb` in `out`; `configure` runs the shell
/// lines `postinst` (none: no maintainer script).
pub fn package(out: &Path, name: &str, version: &str, postinst: Option<&str>) -> PathBuf {
    build(out, &out.join(format!("{name}-{version}")), name, version, postinst, &[])
}

/// Builds the package from the files already in `dir`, with `dpkg-deb`'s
/// extra `flags`.
fn build(out: &Path, dir: &Path, name: &str, version: &str, postinst: Option<&str>, flags: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(dir.join("usr/share/doc").join(name)).unwrap();
    std::fs::write(dir.join("usr/share/doc").join(name).join("VERSION"), format!("{version}\n")).unwrap();
    std::fs::write(
        dir.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: node-init tests <t@example.invalid>\n\
             Description: a package the tests install or upgrade\n"
        ),
    )
    .unwrap();
    if let Some(lines) = postinst {
        let path = dir.join("DEBIAN/postinst");
        std::fs::write(&path, format!("#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  {lines}fi\n")).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    }
    let deb = out.join(format!("{name}_{version}_all.deb"));
    run(Command::new("dpkg-deb").args(["--build", "--root-owner-group"]).args(flags).arg(dir).arg(&deb));
    deb
}

/// A flat apt repository (`deb [trusted=yes] URL ./`) in `repo` holding
/// `deb`.
pub fn flat_repo(repo: &Path, deb: &Path) {
    std::fs::create_dir_all(repo).unwrap();
    std::fs::copy(deb, repo.join(deb.file_name().unwrap())).unwrap();
    let packages = run(Command::new("apt-ftparchive").arg("packages").arg(".").current_dir(repo));
    std::fs::write(repo.join("Packages"), packages).unwrap();
    let release = run(Command::new("apt-ftparchive").arg("release").arg(".").current_dir(repo));
    std::fs::write(repo.join("Release"), release).unwrap();
}

/// Installs `deb` with the root's own dpkg, leaving no copy of it behind.
pub fn install(root: &Path, deb: &Path) {
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let inside = root.join("tmp").join(&name);
    std::fs::copy(deb, &inside).unwrap();
    run(&mut chroot(root, &["dpkg", "-i", &format!("/tmp/{name}")]));
    std::fs::remove_file(inside).unwrap();
}

/// The version of `PKG` the root's dpkg has installed.
pub fn installed(root: &Path) -> String {
    run(&mut chroot(root, &["dpkg-query", "-W", "-f=${Version}", PKG]))
}

/// A flat repository at `/srv/repo` inside the root holding version 2, the
/// only source apt knows; version 1 installed.
pub fn prepare_upgrade(root: &Path) {
    let build = tempfile::tempdir().unwrap();
    let v1 = deb(build.path(), "1");
    let v2 = deb(build.path(), "2");
    flat_repo(&root.join("srv/repo"), &v2);
    std::fs::write(root.join("etc/apt/sources.list"), "deb [trusted=yes] file:/srv/repo ./\n").unwrap();
    if let Ok(entries) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
        for e in entries.flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    install(root, &v1);
    assert_eq!(installed(root), "1");
}
