//! A real containerd (Debian's 1.6) of the test's own, inside a network
//! namespace: its root, state, sockets and config under one directory,
//! and only the environment the test gives it, as containerd.service gets
//! only what its unit and drop-ins set. containerd reads `HTTPS_PROXY`
//! and `SSL_CERT_FILE` once, at start (Go's `http.ProxyFromEnvironment`
//! and the x509 system pool are both computed once per process), so a
//! test that wants another proxy starts another containerd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::Netns;

pub struct Containerd {
    child: Child,
    dir: PathBuf,
}

impl Containerd {
    /// Starts `containerd --config DIR/config.toml` in `ns` with `PATH`
    /// and `env` only; waits up to 20 s for its socket. Killed when
    /// dropped.
    pub fn start(ns: &Netns, dir: &Path, env: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(dir, snapshotter(dir))).expect("writing containerd's config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("creating containerd.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "containerd", "--config"])
            .arg(&config)
            .env_clear()
            .env("PATH", crate::PATH)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("ip netns exec containerd (apt-get install containerd)");
        let mut containerd = Self { child, dir: dir.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.dir.join("containerd.sock").exists() {
            if let Ok(Some(status)) = containerd.child.try_wait() {
                panic!("containerd exited ({status}):\n{}", containerd.log());
            }
            assert!(Instant::now() < deadline, "containerd's socket not there in 20 s:\n{}", containerd.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    /// Its gRPC socket as a CRI endpoint (`unix:///...`).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.dir.join("containerd.sock").display())
    }

    /// Its log, for a failing assertion's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // `ip netns exec` execs containerd in a mount namespace of its
        // own: killing it releases every mount it made.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// overlayfs, containerd's default and the guest's, unless `dir` is on
/// overlayfs itself (a container's root), where an overlay cannot stack
/// and the copying `native` snapshotter stands in.
fn snapshotter(dir: &Path) -> &'static str {
    let out = Command::new("stat").args(["-f", "-c", "%T"]).arg(dir).output().expect("stat -f");
    if String::from_utf8_lossy(&out.stdout).trim() == "overlayfs" { "native" } else { "overlayfs" }
}

/// Debian's defaults but for the paths (root, state, sockets, the `opt`
/// plugin's directory, CNI's), so nothing of the host's containerd is
/// shared; the CRI plugin keeps its defaults (sandbox image, registry
/// hosts, no CNI config: `NetworkReady` false, as on a node before its
/// network add-on).
fn config_toml(dir: &Path, snapshotter: &str) -> String {
    let d = dir.display();
    format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         [grpc]\n  address = \"{d}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"{snapshotter}\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{d}/cni/bin\"\n  conf_dir = \"{d}/cni/net.d\"\n"
    )
}
