//! `e2e-cri-pull`: the guest's way to pull an image as kubeadm does.
//!
//! kubeadm v1.31 no longer shells out to crictl: it pulls with the
//! cri-client library (kubernetes#124685, "Make kubeadm independent from
//! crictl"; cmd/kubeadm/app/util/runtime/runtime.go `PullImage` calls
//! `ImageService.PullImage` with `ImageSpec{Image: image}`, five times at
//! most). So the pull runs inside containerd's daemon, with the daemon's
//! environment (the `HTTPS_PROXY` of containerd.service) and the daemon's
//! trust store. `ctr images pull` would not show that: in containerd 1.6
//! ctr resolves and fetches in its own client process
//! (cmd/ctr/commands/images/pull.go calls `content.Fetch` with a resolver
//! of its own; the daemon-side transfer service came later), with the
//! caller's environment, and only asks the daemon to store the content, so
//! it succeeds on a node whose containerd never got the proxy.
//!
//! The script uses Debian's /usr/bin/python3 and python3-grpcio (a pyenv
//! `python3` first on PATH has no grpc), with the few CRI messages encoded
//! by hand (field numbers from cri-api's pkg/apis/runtime/v1/api.proto).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The client; see the script's docstring for its usage and output.
pub const CRI_PULL: &str = include_str!("e2e-cri-pull.py");

/// Installs [`CRI_PULL`] as `ROOT/usr/local/bin/e2e-cri-pull` (0755);
/// returns its path.
pub fn install_cri_pull(root: &Path) -> PathBuf {
    let path = root.join("usr/local/bin/e2e-cri-pull");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("creating usr/local/bin");
    std::fs::write(&path, CRI_PULL).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod e2e-cri-pull");
    path
}
