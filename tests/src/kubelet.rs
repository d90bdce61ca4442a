//! The kubelet double a VM guest carries: the kubelet's unit and kubeadm's
//! drop-in as the Kubernetes packages ship them, enabled, and a
//! `/usr/bin/kubelet` that refuses what the kubelet v1.31 refuses, so that
//! until kubeadm has configured it systemd restarts it every 10 s, as on a
//! real node.
//!
//! The units are kubernetes/release's `cmd/krel/templates/latest/`:
//! `kubelet/kubelet.service` (`Restart=always`, `StartLimitInterval=0`,
//! `RestartSec=10`, `WantedBy=multi-user.target`) and
//! `kubeadm/10-kubeadm.conf`, the drop-in `kubeadm.spec` installs under
//! `%{_unitdir}/kubelet.service.d/` with `/etc/sysconfig/kubelet` rewritten
//! to `/etc/default/kubelet` for Debian; `kubelet.spec` ships that file
//! from `kubelet.env`. `%{_unitdir}` is `/usr/lib/systemd/system`
//! (`/lib/...` on a merged-/usr Debian is the same directory).
//!
//! The kubelet, in the order `cmd/kubelet/app/server.go` meets them; each
//! refusal is the error `component-base/cli/run.go` logs as
//! `"command failed" err="..."` before exiting 1, also shown on the serial
//! console as `fake-kubelet: <error>`:
//! - `--version` prints `Kubernetes v1.31.4`.
//! - The `--config` file (`/var/lib/kubelet/config.yaml`, kubeadm's) must
//!   exist: "failed to load kubelet config file, path: ..." (server.go's
//!   `loadConfigFile` wrapping the config loader's "failed to read kubelet
//!   config file").
//! - Without `--kubeconfig`'s file, `--bootstrap-kubeconfig`'s must exist
//!   (`pkg/kubelet/certificate/bootstrap`, `LoadClientConfig`): "unable to
//!   load bootstrap kubeconfig: stat ...".
//! - Swap in `/proc/swaps` while failSwapOn holds (the kubelet's default;
//!   kubeadm's config leaves it unset; `failSwapOn: false` in the config
//!   or `--fail-swap-on=false` turns it off): `NewContainerManager` in
//!   `pkg/kubelet/cm/container_manager_linux.go`, "running with swap on is
//!   not supported, please disable swap! or set --fail-swap-on flag to
//!   false. /proc/swaps contained: [...]".
//! - Otherwise it serves `ok` at `http://127.0.0.1:10248/healthz` (the
//!   config's `healthzBindAddress` and `healthzPort`, kubeadm's defaults)
//!   with python3, and prints `fake-kubelet: healthy` on the console once
//!   it listens. It serves nothing else: no port 10250, no pods.
//!
//! Flags are read in their `--name=value` form, the only one the drop-in
//! passes.

use std::path::Path;

use crate::{enable, write_mode};

/// kubernetes/release `cmd/krel/templates/latest/kubelet/kubelet.service`.
const KUBELET_SERVICE: &str = "[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
";

/// kubernetes/release `cmd/krel/templates/latest/kubeadm/10-kubeadm.conf`,
/// with the Debian path `kubeadm.spec` substitutes.
const KUBEADM_DROP_IN: &str = r#"# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort. Preferably, the user should use
# the .NodeRegistration.KubeletExtraArgs object in the configuration files instead. KUBELET_EXTRA_ARGS should be sourced from this file.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"#;

/// The script; see the module's doc.
const FAKE_KUBELET: &str = r##"#!/bin/sh
console() { [ -w /dev/ttyS0 ] && printf 'fake-kubelet: %s\n' "$*" > /dev/ttyS0; }
# The kubelet's last words: klog's error line from run.go, exit 1.
refuse() {
  printf '%s %7d run.go:72] "command failed" err="%s"\n' "$(date -u '+E%m%d %H:%M:%S.%6N')" $$ \
    "$(printf '%s' "$1" | sed 's/"/\\"/g')" >&2
  console "$1"
  exit 1
}
config='' kubeconfig='' bootstrap='' failswap=true
for a in "$@"; do
  case "$a" in
  --version) echo "Kubernetes v1.31.4"; exit 0;;
  --config=*) config=${a#*=};;
  --kubeconfig=*) kubeconfig=${a#*=};;
  --bootstrap-kubeconfig=*) bootstrap=${a#*=};;
  --fail-swap-on=false) failswap=false;;
  esac
done
if [ -n "$config" ]; then
  [ -e "$config" ] || refuse "failed to load kubelet config file, path: $config, error: failed to load Kubelet config file $config, error failed to read kubelet config file \"$config\", error: open $config: no such file or directory"
  grep -q '^failSwapOn: false' "$config" && failswap=false
fi
if [ -n "$bootstrap" ] && ! [ -e "${kubeconfig:-/nonexistent}" ] && ! [ -e "$bootstrap" ]; then
  refuse "failed to run Kubelet: unable to load bootstrap kubeconfig: stat $bootstrap: no such file or directory"
fi
if [ $failswap = true ] && [ -r /proc/swaps ] && [ "$(wc -l < /proc/swaps)" -gt 1 ]; then
  refuse "failed to run Kubelet: running with swap on is not supported, please disable swap! or set --fail-swap-on flag to false. /proc/swaps contained: [$(paste -sd' ' /proc/swaps)]"
fi
# The static pods (kubelet/config: staticPodPath, kubeadm's
# /etc/kubernetes/manifests), watched as the kubelet's file source watches
# them (inotify, and a re-list every fileCheckFrequency, 20 s): for each
# pod the kubelet asks the runtime for its images (kuberuntime_image.go
# EnsureImageExists, through the CRI), so kube-vip's image, written after
# kubeadm's join, comes through containerd as kubeadm's did. In the
# background, as the kubelet's pod workers run beside its healthz server.
pods=$(sed -n 's/^staticPodPath: *//p' "$config" 2>/dev/null)
pods=${pods:-/etc/kubernetes/manifests}
if [ -x /usr/local/bin/e2e-cri-pull ]; then
  (pulled=' '
  while :; do
    for image in $(cat "$pods"/*.yaml 2>/dev/null | sed -n 's/^ *image: *//p' | tr -d '"' | sort -u); do
      case "$pulled" in *" $image "*) continue;; esac
      # imagePullPolicy IfNotPresent (image_manager.go shouldPullImage):
      # an image the runtime has is "already present on machine".
      if /usr/local/bin/e2e-cri-pull --present "$image" > /dev/null 2>&1; then
        console "Container image \"$image\" already present on machine"; pulled="$pulled$image "
      elif out=$(/usr/local/bin/e2e-cri-pull "$image" 2>&1); then console "pulled $image for a static pod"; pulled="$pulled$image "
      else console "Failed to pull image \"$image\": $(printf '%s' "$out" | tr '\n' ' ')"; fi
    done
    sleep 2
  done) &
fi
addr=$(sed -n 's/^healthzBindAddress: *//p' "$config" 2>/dev/null)
port=$(sed -n 's/^healthzPort: *//p' "$config" 2>/dev/null)
command -v python3 > /dev/null || { console "python3 is missing: nothing can serve healthz"; exit 1; }
exec python3 -c '
import http.server, sys

class Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path.split("?")[0] == "/healthz"
        body = b"ok" if ok else b"404 page not found\n"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), Healthz)
try:
    with open("/dev/ttyS0", "w") as tty:
        tty.write("fake-kubelet: healthy\n")
except OSError:
    pass
server.serve_forever()
' "${addr:-127.0.0.1}" "${port:-10248}"
"##;

/// Puts the kubelet double at `usr/bin/kubelet` under `root`, the
/// packages' unit, drop-in and `/etc/default/kubelet` beside it, and
/// enables the unit as `systemctl enable` does: a link in
/// `multi-user.target.wants`.
pub fn install(root: &Path) {
    write_mode(root, "usr/bin/kubelet", FAKE_KUBELET, 0o755);
    write_mode(root, "usr/lib/systemd/system/kubelet.service", KUBELET_SERVICE, 0o644);
    write_mode(root, "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBEADM_DROP_IN, 0o644);
    write_mode(root, "etc/default/kubelet", "KUBELET_EXTRA_ARGS=\n", 0o644);
    enable(root, "/usr/lib/systemd/system/kubelet.service", "multi-user.target");
}
