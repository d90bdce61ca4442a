//! The kubeadm double and a node root that carries it. The double is a
//! shell script at `/usr/local/bin/kubeadm` that keeps every call's argv,
//! the `--config` file and kube-vip's manifest as they were at that moment
//! under `/var/log/kubeadm/`, fails `init`/`join` as many times as
//! `/var/log/kubeadm/fail` says, and in a VM shows each call on the serial
//! console.
//!
//! Like kubeadm, it leaves a node's files behind and takes them away: a
//! successful `init`/`join` lays down what the test put under
//! `/var/log/kubeadm/issue/` (the kubelet.conf and client certificate the
//! kubelet's TLS bootstrap would write); `reset -f` deletes what kubeadm's
//! reset deletes. `token create` and `init phase upload-certs` answer as
//! kubeadm does, on stdout, only where admin.conf lets them talk to the
//! cluster, and keep what they minted under `/var/log/kubeadm/`.
//!
//! On a host booted with systemd (a VM guest), `init` and `join` also do
//! to the host what kubeadm v1.31 does, phase by phase, with kubeadm's
//! output and errors: preflight (the files, ports, sysctls, CRI, kubelet
//! and swap checks, `--ignore-preflight-errors` honoured), the image pulls
//! of init and a control-plane join through the CRI client
//! `/usr/local/bin/e2e-cri-pull`, kubelet-start (the kubelet's config and
//! flags, `systemctl daemon-reload` and a blocking `systemctl restart
//! kubelet`), kubelet-check (healthz within 4m0s), and a join's TLS
//! bootstrap (kubelet.conf from `issue/`). Every kubeadm line also shows on
//! the console as `fake-kubeadm: ...`. `Node::booted_host` makes a chroot
//! look like such a host.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::kube::ClusterCa;
use crate::rootfs::extracted;
use crate::{node_init, set_boot_id};

/// The script; see the module's doc.
const FAKE_KUBEADM: &str = r##"#!/bin/sh
# In a VM, each call also shows on the serial console.
[ -w /dev/ttyS0 ] && echo "fake-kubeadm: $*" > /dev/ttyS0
log=/var/log/kubeadm
mkdir -p $log
n=$(( $(cat $log/count 2>/dev/null || echo 0) + 1 ))
echo $n > $log/count
echo "$*" >> $log/argv
if [ "$1" = version ]; then echo v1.31.4; exit 0; fi
if [ "$2" = --config ]; then cp "$3" $log/config.$n; fi
if [ -f /etc/kubernetes/manifests/kube-vip.yaml ]; then cp /etc/kubernetes/manifests/kube-vip.yaml $log/kube-vip.$n; fi
# The value after flag $1 in the rest of the arguments.
flag() { f=$1; shift; while [ $# -gt 1 ]; do [ "$1" = "$f" ] && { echo "$2"; return; }; shift; done; }
# What talks to the cluster does it as admin.conf's user.
admin() {
  [ -f /etc/kubernetes/admin.conf ] && return
  echo "failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: no such file or directory" >&2
  exit 1
}
chars() { tr -dc 'a-z0-9' </dev/urandom | head -c "$1"; }

# ---- On a host booted with systemd: what kubeadm v1.31 does to it. ----
# sd_booted(3)'s test. Under `node-init run --root` the double runs in a
# chroot with no systemd: nothing there answers systemctl, listens on a
# port or runs a CRI, and /proc is the root's own directory, so there it
# only lays down the node's files, as it always did.
booted() { [ -d /run/systemd/system ]; }
# One line of kubeadm's stdout, also on the console so a hang shows where.
say() { printf '%s\n' "$*"; [ -w /dev/ttyS0 ] && printf 'fake-kubeadm: %s\n' "$*" > /dev/ttyS0; }
console() { [ -w /dev/ttyS0 ] && printf 'fake-kubeadm: %s\n' "$*" > /dev/ttyS0; }
# kubeadm's error on stderr (every line on the console), and its exit.
die() {
  printf '%s\nTo see the stack trace of this error execute with --v=5 or higher\n' "$*" >&2
  [ -w /dev/ttyS0 ] && printf '%s\n' "$*" | sed 's/^/fake-kubeadm: /' > /dev/ttyS0
  exit 1
}
# `key: value` at the top level of file $2, then at any depth; unquoted.
top() { [ -f "$2" ] && sed -n "s/^$1: *\(..*\)/\1/p" "$2" | head -n 1 | tr -d '"'; }
any() { [ -f "$2" ] && sed -n "s/^ *$1: *\(..*\)/\1/p" "$2" | head -n 1 | tr -d '"'; }
# Seconds in a Go duration (4m0s), and back; $2 when it is not one.
secs() {
  case "$1" in ""|*[!0-9hms]*) echo "$2"; return;; esac
  echo "$1" | grep -Eq '^([0-9]+h)?([0-9]+m)?([0-9]+s)?$' || { echo "$2"; return; }
  echo $(( $(echo "$1" | sed -e 's/h/*3600+/' -e 's/m/*60+/' -e 's/s$//' -e 's/+$//') + 0 ))
}
godur() {
  if [ "$1" -ge 3600 ]; then echo "$(($1 / 3600))h$(($1 % 3600 / 60))m$(($1 % 60))s"
  elif [ "$1" -ge 60 ]; then echo "$(($1 / 60))m$(($1 % 60))s"; else echo "$1s"; fi
}
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.9fs\n", b - a }'; }

# preflight.RunChecks (cmd/kubeadm/app/preflight/checks.go): a failed check
# is an error unless --ignore-preflight-errors or the config's
# nodeRegistration.ignorePreflightErrors names it (any case) or says
# `all`; then it is a warning. Warnings print at once, errors at the end.
errs=
warn() { printf '\t[WARNING %s]: %s\n' "$1" "$2" >&2; }
fail() {
  case "$ignore" in *" all "* | *" $(echo "$1" | tr 'A-Z' 'a-z') "*) warn "$1" "$2"; return;; esac
  errs="$errs$(printf '\t[ERROR %s]: %s' "$1" "$2")
"
}
fatal() {
  [ -n "$errs" ] || return 0
  die "error execution phase preflight: [preflight] Some fatal errors occurred:
${errs}[preflight] If you know what you are doing, you can make a check non-fatal with \`--ignore-preflight-errors=...\`"
}
# FileAvailableCheck: the file must not exist yet.
available() { if [ -e "$1" ]; then fail "FileAvailable-$(echo "$1" | tr / -)" "$1 already exists"; fi; }
# DirAvailableCheck: the directory is missing or empty.
dir_available() {
  if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then fail "DirAvailable-$(echo "$1" | tr / -)" "$1 is not empty"; fi
}
# FileContentCheck: the file's first byte is "1" (addIPv4Checks: the
# bridge sysctl exists only once br_netfilter is loaded).
content() {
  name="FileContent-$(echo "$1" | tr / -)"
  if [ ! -r "$1" ]; then fail "$name" "$1 does not exist"
  elif [ "$(head -c 1 "$1")" != 1 ]; then fail "$name" "$1 contents are not set to 1"; fi
}
ipv4() { content /proc/sys/net/bridge/bridge-nf-call-iptables; content /proc/sys/net/ipv4/ip_forward; }
# PortOpenCheck listens on :PORT, which fails while anything listens there.
port() {
  hex=$(printf ':%04X' "$1")
  if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }'; then
    fail "Port-$1" "Port $1 is in use"
  fi
}
# The ports, manifests and etcd directory InitNodeChecks looks at.
control_plane_checks() {
  bind=$(any bindPort "$cfg")
  port "${bind:-6443}"; port 10259; port 10257
  for c in kube-apiserver kube-controller-manager kube-scheduler etcd; do available /etc/kubernetes/manifests/$c.yaml; done
}
etcd_checks() { port 2379; port 2380; dir_available /var/lib/etcd; }
# addCommonChecks. ContainerRuntimeCheck asks the CRI's RuntimeService
# Status (util/runtime: "container runtime is not running" wraps the
# error); e2e-cri-pull is the CRI client that asks it here.
common_checks() {
  cri=/usr/local/bin/e2e-cri-pull
  if [ ! -x $cri ]; then fail CRI "container runtime is not running: $cri, the CRI client, is missing"
  elif ! out=$(timeout 120 $cri --status 2>&1); then fail CRI "container runtime is not running: $(printf '%s' "$out" | tr '\n' ' ')"; fi
  # SwapCheck only warns in 1.31 (kubernetes#125157): the kubelet refuses.
  if [ -r /proc/swaps ] && [ "$(wc -l < /proc/swaps)" -gt 1 ]; then
    warn Swap "swap is supported for cgroup v2 only. The kubelet must be properly configured to use swap. Please refer to https://kubernetes.io/docs/concepts/architecture/nodes/#swap-memory, or disable swap on the node"
  fi
  if ! command -v kubelet > /dev/null; then
    fail KubeletVersion "couldn't get kubelet version: cannot execute 'kubelet --version': executable file not found in \$PATH"
  elif ! kubelet --version 2>/dev/null | grep -q '^Kubernetes v'; then
    fail KubeletVersion "couldn't get kubelet version: Unable to parse output from Kubelet: \"$(kubelet --version 2>&1)\""
  fi
  # ServiceCheck (no init system: initsystem.GetInitSystem's error).
  if ! command -v systemctl > /dev/null; then
    warn Service-Kubelet "no supported init system detected, skipping checking for services"
  elif systemctl status kubelet 2>/dev/null | grep -q 'Loaded: not-found'; then warn Service-Kubelet "kubelet service does not exist"
  elif ! systemctl is-enabled kubelet > /dev/null 2>&1; then
    warn Service-Kubelet "kubelet service is not enabled, please run 'systemctl enable kubelet.service'"
  fi
  port 10250
}

# ImagePullCheck, after the checks of init and of a control-plane join: the
# images of images.GetControlPlaneImages for the ClusterConfiguration, in
# its order. CoreDNSVersion and PauseVersion are kubeadm 1.31's constants,
# etcd its SupportedEtcdVersion for 1.31 (as `kubeadm config images list`
# prints them for v1.31.x; minikube's constants_kubeadm_images.go keeps
# that list). Only the default repository nests CoreDNS one level deeper
# (images.GetDNSImage). Each pull goes through containerd's CRI, so
# containerd's own environment decides the proxy. With the default policy
# IfNotPresent an image the runtime has (ImageExists: CRI ImageStatus) is
# not pulled again; PullImage tries 5 times (constants.PullImageRetry),
# one image after another (serialPull), with no deadline.
images() {
  for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do echo "$repo/$c:$version"; done
  if [ "$repo" = registry.k8s.io ]; then echo "$repo/coredns/coredns:v1.11.3"; else echo "$repo/coredns:v1.11.3"; fi
  echo "$repo/pause:3.10"
  echo "$repo/etcd:3.5.15-0"
}
pull() {
  say "[preflight] Pulling images required for setting up a Kubernetes cluster"
  say "[preflight] This might take a minute or two, depending on the speed of your internet connection"
  say "[preflight] You can also perform this action beforehand using 'kubeadm config images pull'"
  for image in $(images); do
    if /usr/local/bin/e2e-cri-pull --present "$image" > /dev/null 2>&1; then
      console "[preflight] image exists: $image"
      continue
    fi
    console "[preflight] pulling $image"
    i=0
    until out=$(/usr/local/bin/e2e-cri-pull "$image" 2>&1); do
      i=$((i + 1))
      [ $i -lt 5 ] && continue
      fail ImagePull "failed to pull image $image: failed to pull image $image: $(printf '%s' "$out" | tr '\n' ' ')"
      break
    done
  done
  fatal
}

# initsystem.SystemdInitSystem: `systemctl daemon-reload`, then the verb,
# each waited for, their output discarded; the error is Go's.
service() {
  systemctl daemon-reload > /dev/null 2>&1; s=$?
  [ $s -eq 0 ] || { echo "failed to reload systemd: exit status $s"; return 1; }
  systemctl "$1" kubelet > /dev/null 2>&1; s=$?
  [ $s -eq 0 ] || { echo "exit status $s"; return 1; }
}
# phases/kubelet/kubelet.go: TryStopKubelet, TryStartKubelet. kubeadm only
# warns when these fail. The restart blocks until systemd has restarted
# the kubelet: a unit ordered before kubelet.service that runs kubeadm
# waits on itself here, for ever.
stop_kubelet() {
  command -v systemctl > /dev/null || return
  err=$(service stop) || say "[kubelet-start] WARNING: unable to stop the kubelet service momentarily: [$err]"
}
start_kubelet() {
  if ! command -v systemctl > /dev/null; then
    say "[kubelet-start] no supported init system detected, won't make sure the kubelet is running properly."
    return
  fi
  if systemctl status kubelet 2>/dev/null | grep -q 'Loaded: not-found'; then
    say "[kubelet-start] couldn't detect a kubelet service, can't make sure the kubelet is running properly."
  fi
  if ! err=$(service restart); then
    say "[kubelet-start] WARNING: unable to start the kubelet service: [$err]"
    say "[kubelet-start] Please ensure kubelet is reloaded and running manually."
  fi
}
# WriteConfigToDisk: the KubeletConfiguration kubeadm's componentconfigs
# (kubelet.go, Default) fills in. failSwapOn is not among them: the
# kubelet's own default, true, applies.
kubelet_config() {
  say "[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\""
  mkdir -p /var/lib/kubelet
  svc=$(any serviceSubnet "$cluster"); svc=${svc%%,*}
  dns=$(echo "${svc%/*}" | awk -F. 'NF == 4 { n = (($1 * 256 + $2) * 256 + $3) * 256 + $4 + 10
    printf "%d.%d.%d.%d", int(n / 16777216) % 256, int(n / 65536) % 256, int(n / 256) % 256, n % 256 }')
  domain=$(any dnsDomain "$cluster")
  resolv=
  systemctl is-active systemd-resolved > /dev/null 2>&1 && resolv="resolvConf: /run/systemd/resolve/resolv.conf
"
  cat > /var/lib/kubelet/config.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: systemd
clusterDNS:
- ${dns:-10.96.0.10}
clusterDomain: ${domain:-cluster.local}
healthzBindAddress: 127.0.0.1
healthzPort: 10248
kind: KubeletConfiguration
${resolv}rotateCertificates: true
staticPodPath: /etc/kubernetes/manifests
EOF
}
# WriteKubeletDynamicEnvFile (phases/kubelet/flags.go): the CRI endpoint,
# the pause image, --hostname-override when the node's name is not the
# hostname, then nodeRegistration.kubeletExtraArgs (v1beta4's list or
# v1beta3's map), which win; sorted by name.
kubelet_flags() {
  say "[kubelet-start] Writing kubelet environment file with flags to file \"/var/lib/kubelet/kubeadm-flags.env\""
  mkdir -p /var/lib/kubelet
  sock=$(any criSocket "$cfg")
  name=$(sed -n 's/^  name: *//p' "$cfg" 2>/dev/null | head -n 1 | tr -d '"')
  args=$({
    [ -f "$cfg" ] && awk '/^  kubeletExtraArgs:/ { x = 1; next }
      x && /^  - name: / { k = $0; sub(/^  - name: */, "", k); gsub(/"/, "", k); next }
      x && /^    value: / { v = $0; sub(/^    value: */, "", v); gsub(/^"|"$/, "", v); print k "=" v; next }
      x && /^    [^ ]+: / { k = $0; sub(/^ */, "", k); v = k; sub(/:.*/, "", k); sub(/^[^:]*: */, "", v); gsub(/^"|"$/, "", v); print k "=" v; next }
      { x = 0 }' "$cfg"
    echo "container-runtime-endpoint=${sock:-unix:///var/run/containerd/containerd.sock}"
    echo "pod-infra-container-image=$repo/pause:3.10"
    [ -n "$name" ] && [ "$name" != "$(uname -n | tr 'A-Z' 'a-z')" ] && echo "hostname-override=$name"
  } | awk -F= '!seen[$1]++' | LC_ALL=C sort | sed 's/^/--/' | tr '\n' ' ' | sed 's/ $//')
  printf 'KUBELET_KUBEADM_ARGS="%s"\n' "$args" > /var/lib/kubelet/kubeadm-flags.env
}
# apiclient.WaitForKubelet: GET the kubelet's healthz every 500 ms until
# it answers 200 or timeouts.kubeletHealthCheck (4m0s by default) runs
# out. Go's client never proxies a loopback address; curl is told not to.
kubelet_check() {
  t=$(secs "$(any kubeletHealthCheck "$cfg")" 240)
  url=http://127.0.0.1:10248/healthz
  say "[kubelet-check] Waiting for a healthy kubelet at $url. This can take up to $(godur "$t")"
  start=$(date +%s.%N)
  end=$(($(date +%s) + t))
  until curl -sf --noproxy '*' --max-time 2 -o /dev/null $url; do
    if [ "$(date +%s)" -ge $end ]; then
      say "[kubelet-check] The kubelet is not healthy after $(since "$start")"
      err="The HTTP call equal to 'curl -sSL $url' returned error: Get \"$url\": context deadline exceeded"
      fail_msg "$err"
      die "error execution phase $1: $err"
    fi
    sleep 0.5
  done
  say "[kubelet-check] The kubelet is healthy after $(since "$start")"
}
# kubeadmJoinFailMsg (phases/join/kubelet.go), on stdout.
fail_msg() {
  printf '\nUnfortunately, an error has occurred:\n\t%s\n\n' "$1"
  printf 'This error is likely caused by:\n\t- The kubelet is not running\n'
  printf '\t- The kubelet is unhealthy due to a misconfiguration of the node in some way (required cgroups disabled)\n\n'
  printf 'If you are on a systemd-powered system, you can try to troubleshoot the error with the following commands:\n'
  printf "\t- 'systemctl status kubelet'\n\t- 'journalctl -xeu kubelet'\n\n"
}
# Token discovery's cluster-info (discovery/token): kubeadm asks the
# endpoint every 5 s until timeouts.discovery (5m0s by default) runs out.
# node-init has already verified its signature and CA pin; the double only
# takes the CA it carries, as kubeadm does after verifying.
discover() {
  # v1beta4's timeouts.discovery, else v1beta3's discovery.timeout.
  t=$(secs "$(any discovery "$cfg")" "")
  [ -n "$t" ] || t=$(secs "$(any timeout "$cfg")" 300)
  end=$(($(date +%s) + t))
  url="https://$server/api/v1/namespaces/kube-public/configmaps/cluster-info"
  until ca=$(curl -sfk --noproxy '*' --max-time 10 "$url" | sed -n 's/.*certificate-authority-data: \([A-Za-z0-9+\/=]*\).*/\1/p') &&
    [ -n "$ca" ]; do
    [ "$(date +%s)" -ge $end ] &&
      die "error execution phase preflight: couldn't validate the identity of the API Server: failed to request the cluster-info ConfigMap: client rate limiter Wait returned an error: context deadline exceeded"
    sleep 5
  done
}
# The kubeconfig the kubelet's TLS bootstrap starts from
# (phases/join/kubelet.go, runKubeletStartJoinPhase).
bootstrap_kubeconfig() {
  mkdir -p /etc/kubernetes
  (umask 077; cat > /etc/kubernetes/bootstrap-kubelet.conf <<EOF
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $ca
    server: https://$server
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: tls-bootstrap-token-user
  name: tls-bootstrap-token-user@kubernetes
current-context: tls-bootstrap-token-user@kubernetes
kind: Config
preferences: {}
users:
- name: tls-bootstrap-token-user
  user:
    token: $token
EOF
  )
}

# `kubeadm init`, phase by phase (cmd/kubeadm/app/cmd/init.go). certs,
# kubeconfig, etcd and control-plane write what the test put under
# issue/: the double has no control plane to start, so after kubelet-check
# it stops where kubeadm would wait for the API server.
init_booted() {
  cluster=$cfg
  # preflight (phases/init/preflight.go: RunInitNodeChecks, then the pulls).
  say "[preflight] Running pre-flight checks"
  control_plane_checks
  common_checks
  ipv4
  etcd_checks
  fatal
  pull
  # certs, kubeconfig, etcd, control-plane.
  [ -d $log/issue ] && cp -a $log/issue/. /
  # kubelet-start (phases/init/kubelet.go): stop, the env file, the
  # config, then the blocking restart.
  stop_kubelet
  kubelet_flags
  kubelet_config
  say "[kubelet-start] Starting the kubelet"
  start_kubelet
  # wait-control-plane: first the kubelet's health.
  say "[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory \"/etc/kubernetes/manifests\""
  kubelet_check wait-control-plane
  say "Your Kubernetes control-plane has initialized successfully!"
}

# `kubeadm join`, phase by phase (cmd/kubeadm/app/cmd/join.go).
join_booted() {
  # A join reads the ClusterConfiguration (version, repository, service
  # subnet) from the cluster's kubeadm-config ConfigMap. No cluster stands
  # behind the double: it reads $log/cluster-config when a test put one
  # there, else kubeadm's defaults at its own version.
  cluster=$log/cluster-config
  server=$(any apiServerEndpoint "$cfg")
  case "$2" in -* | "") ;; *) server=${server:-$2};; esac
  token=$(any tlsBootstrapToken "$cfg")
  token=${token:-$(flag --tls-bootstrap-token "$@")}
  token=${token:-$(flag --token "$@")}
  # preflight (phases/join/preflight.go: JoinNodeChecks; the IPv4 checks
  # only when the endpoint is an IPv4 address).
  say "[preflight] Running pre-flight checks"
  available /etc/kubernetes/kubelet.conf
  available /etc/kubernetes/bootstrap-kubelet.conf
  common_checks
  [ -z "$control_plane" ] && available /etc/kubernetes/pki/ca.crt
  echo "${server%:*}" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' && ipv4
  fatal
  discover
  say "[preflight] Reading configuration from the cluster..."
  say "[preflight] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'"
  if [ -n "$control_plane" ]; then
    say "[preflight] Running pre-flight checks before initializing the new control plane instance"
    control_plane_checks
    etcd_checks
    fatal
    pull
  fi
  # kubelet-start (phases/join/kubelet.go): the bootstrap kubeconfig
  # (deleted when the phase returns, however it returns), stop, the config,
  # the env file, the blocking restart, the kubelet's health, then its TLS
  # bootstrap.
  bootstrap_kubeconfig
  trap 'rm -f /etc/kubernetes/bootstrap-kubelet.conf' EXIT
  stop_kubelet
  kubelet_config
  kubelet_flags
  say "[kubelet-start] Starting the kubelet"
  start_kubelet
  kubelet_check kubelet-start
  # The kubelet's TLS bootstrap writes kubelet.conf; here it is what the
  # test put under issue/. Without it no kubelet.conf will ever appear, so
  # the double fails now with the error kubeadm gives after
  # timeouts.tlsBootstrap.
  say "[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap"
  [ -d $log/issue ] && cp -a $log/issue/. /
  if [ ! -f /etc/kubernetes/kubelet.conf ]; then
    fail_msg "context deadline exceeded"
    die "error execution phase kubelet-start: context deadline exceeded"
  fi
  rm -f /etc/kubernetes/bootstrap-kubelet.conf
  trap - EXIT
  say ""
  say "This node has joined the cluster:"
  say "* Certificate signing request was sent to apiserver and a response was received."
  say "* The Kubelet was informed of the new secure connection details."
}

# The --config file, what to pull and which checks are ignored.
setup() {
  cfg=$(flag --config "$@")
  control_plane=
  if [ "$1" = init ] || grep -q '^controlPlane:' "$cfg" 2>/dev/null; then control_plane=1; fi
  for a in "$@"; do [ "$a" = --control-plane ] && control_plane=1; done
  ignore="$(flag --ignore-preflight-errors "$@")"
  for a in "$@"; do case "$a" in --ignore-preflight-errors=*) ignore="$ignore,${a#*=}";; esac; done
  [ -f "$cfg" ] && ignore="$ignore $(awk '/^  ignorePreflightErrors:/ { x = 1; next }
    x && /^  - / { sub(/^  - */, ""); gsub(/"/, ""); print; next } { x = 0 }' "$cfg")"
  ignore=" $(echo $ignore | tr ',A-Z' ' a-z') "
  if [ "$1" = init ]; then version=$(top kubernetesVersion "$cfg"); repo=$(top imageRepository "$cfg")
  else version=$(top kubernetesVersion $log/cluster-config); repo=$(top imageRepository $log/cluster-config); fi
  version=${version:-v1.31.4}
  repo=${repo:-registry.k8s.io}
}

case "$1 $2 $3" in
"config images list")
  # cmd/config.go's `images list`: GetControlPlaneImages, one per line on
  # stdout. With an explicit version it asks nothing of the internet.
  version=$(flag --kubernetes-version "$@")
  repo=$(flag --image-repository "$@")
  [ -n "$version" ] || { echo 'W0101 00:00:00.000000       1 version.go:104] could not fetch a Kubernetes version from the internet: unable to get URL "https://dl.k8s.io/release/stable-1.txt"' >&2; version=v1.31.4; }
  repo=${repo:-registry.k8s.io}
  images
  exit 0;;
"init phase upload-certs")
  admin
  # Without --config, kubeadm first asks dl.k8s.io for the stable version.
  echo 'W0101 00:00:00.000000       1 version.go:104] could not fetch a Kubernetes version from the internet: unable to get URL "https://dl.k8s.io/release/stable-1.txt"' >&2
  key=$(flag --certificate-key "$@")
  [ -n "$key" ] || key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  echo "$key" > $log/certificate-key
  echo '[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace'
  echo '[upload-certs] Using certificate key:'
  echo "$key"
  exit 0;;
"token create"*)
  admin
  case "$3" in -*|"") token="$(chars 6).$(chars 16)";; *) token=$3;; esac
  echo "$token $(flag --ttl "$@")" >> $log/tokens
  case " $* " in *" --print-join-command "*) ;; *) echo "$token"; exit 0;; esac
  # The endpoint and the CA pin come from admin.conf, as kubeadm's do.
  server=$(sed -n 's#^ *server: https://##p' /etc/kubernetes/admin.conf | head -n 1)
  sed -n 's/^ *certificate-authority-data: //p' /etc/kubernetes/admin.conf | base64 -d > $log/admin-ca.crt
  pin=$(openssl x509 -pubkey -noout -in $log/admin-ca.crt | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)
  echo "kubeadm join $server --token $token --discovery-token-ca-cert-hash sha256:$pin "
  exit 0;;
esac
case "$1" in
init|join)
  fails=$(cat $log/fail 2>/dev/null || echo 0)
  if [ "$fails" -gt 0 ]; then
    echo $((fails - 1)) > $log/fail
    echo "[ERROR FileAvailable]: scripted failure" >&2
    exit 1
  fi
  if booted; then
    setup "$@"
    "$1"_booted "$@"
    exit 0
  fi
  [ -d $log/issue ] && cp -a $log/issue/. /
  echo "kubeadm $1 done";;
reset)
  # cleanupnode.go stops the kubelet first; in a chroot there is none.
  booted && command -v systemctl > /dev/null && { echo "[reset] Stopping the kubelet service"; systemctl stop kubelet; }
  # kubeadm reset's own list (cmd/kubeadm/app/cmd/phases/reset/cleanupnode.go).
  rm -rf /etc/kubernetes/manifests/* /var/lib/kubelet/* /etc/kubernetes/pki/* /var/lib/etcd/*
  for f in admin.conf super-admin.conf kubelet.conf bootstrap-kubelet.conf controller-manager.conf scheduler.conf; do
    rm -f /etc/kubernetes/$f
  done;;
esac
exit 0
"##;

/// Puts the double at `usr/local/bin/kubeadm` under `root`, executable.
pub fn install(root: &Path) {
    let bin = root.join("usr/local/bin/kubeadm");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, FAKE_KUBEADM).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A copy of the real rootfs with the double and user data, for
/// `node-init run --root`.
pub struct Node {
    root: tempfile::TempDir,
}

impl Node {
    /// The real rootfs with the recording kubeadm, failing `fails` times,
    /// and `user_data` where cloud-init keeps it.
    pub fn new(user_data: &str, fails: u32) -> Self {
        let root = extracted();
        let r = root.path();
        install(r);
        std::fs::create_dir_all(r.join("var/log/kubeadm")).unwrap();
        std::fs::write(r.join("var/log/kubeadm/fail"), fails.to_string()).unwrap();
        let ud = r.join("var/lib/cloud/instance/user-data.txt");
        std::fs::create_dir_all(ud.parent().unwrap()).unwrap();
        std::fs::write(ud, user_data).unwrap();
        set_boot_id(r, "e2e-boot-1");
        Self { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// The root as a `--root` argument.
    pub fn arg(&self) -> String {
        self.root.path().display().to_string()
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Writes `content` at `rel` (relative to the root), creating its
    /// directories.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// What a successful `kubeadm init|join` leaves on this node: the
    /// kubelet.conf (as TLS bootstrap writes it, pointing at its client
    /// certificate) and that certificate with its key, for `name` in the
    /// cluster of `ca`.
    pub fn issue_kubelet(&self, ca: &ClusterCa, server: &str, name: &str) {
        self.kubelet_files("var/log/kubeadm/issue/", ca, server, name);
    }

    /// The same files already in place: what an earlier, interrupted run
    /// left.
    pub fn left_kubelet(&self, ca: &ClusterCa, server: &str, name: &str) {
        self.kubelet_files("", ca, server, name);
    }

    fn kubelet_files(&self, under: &str, ca: &ClusterCa, server: &str, name: &str) {
        kubelet_files(&self.root.path().join(under), ca, server, name);
    }

    /// The admin.conf of a control-plane node in the cluster of `ca`, and
    /// its CA where kubeadm keeps it.
    pub fn control_plane(&self, ca: &ClusterCa, server: &str) {
        let (cert, key) = ca.client("kubernetes-admin", "kubeadm:cluster-admins");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let admin = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://{server}\n  \
             name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  name: \
             kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\nkind: Config\nusers:\n- name: \
             kubernetes-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ca.cert_pem),
            b64(&cert),
            b64(&key)
        );
        self.write("etc/kubernetes/admin.conf", &admin);
        self.write("etc/kubernetes/pki/ca.crt", &ca.cert_pem);
    }

    /// Every bootstrap token `token create` made, with its `--ttl`.
    pub fn tokens(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.path("var/log/kubeadm/tokens")).unwrap_or_default();
        text.lines().map(|l| l.split_once(' ').map(|(t, ttl)| (t.to_owned(), ttl.to_owned())).unwrap()).collect()
    }

    /// The argv of every kubeadm call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("var/log/kubeadm/argv"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `node-init run --root` into this node.
    pub fn run(&self) -> std::process::Output {
        node_init(&["run", "--root", &self.arg()])
    }

    /// This root as a host booted with systemd, seen from a chroot:
    /// `/run/systemd/system` (what sd_booted(3) tests), a `systemctl` that
    /// keeps every call in `/var/log/systemctl` and knows the kubelet's
    /// unit, a CRI client that answers and keeps every call in
    /// `/var/log/cri-pull` (failing pulls of the images listed in
    /// `/var/log/cri-pull.fail`, and having those in
    /// `/var/log/cri-pull.present`), the sysctls kubeadm checks at 1, no swap,
    /// no listener (`/proc` is the root's own files), and the kubelet
    /// double.
    pub fn booted_host(&self) {
        std::fs::create_dir_all(self.path("run/systemd/system")).unwrap();
        self.script(
            "usr/local/bin/systemctl",
            "#!/bin/sh\necho \"$*\" >> /var/log/systemctl\ncase \"$1\" in\n\
             status) echo '     Loaded: loaded (/usr/lib/systemd/system/kubelet.service; enabled)';;\n\
             is-active) exit 3;;\nesac\n",
        );
        self.script(
            "usr/local/bin/e2e-cri-pull",
            "#!/bin/sh\necho \"$*\" >> /var/log/cri-pull\n\
             if [ \"$1\" = --present ]; then grep -qxF -- \"$2\" /var/log/cri-pull.present 2>/dev/null; exit; fi\n\
             if grep -qxF -- \"$1\" /var/log/cri-pull.fail 2>/dev/null; then\n  \
             echo \"rpc error: code = NotFound desc = failed to pull and unpack image \\\"$1\\\"\" >&2; exit 1\nfi\n",
        );
        self.write("proc/sys/net/ipv4/ip_forward", "1\n");
        self.write("proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
        self.write("proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
        crate::kubelet::install(self.root.path());
    }

    fn script(&self, rel: &str, content: &str) {
        self.write(rel, content);
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `kubeadm ARGS` chrooted into this node, as node-init runs it.
    pub fn kubeadm(&self, args: &[&str]) -> std::process::Output {
        let mut argv = vec!["kubeadm"];
        argv.extend(args);
        crate::output(&mut crate::rootfs::chroot(self.root.path(), &argv))
    }
}

/// What the kubelet's TLS bootstrap leaves under `root` for `name` in the
/// cluster of `ca` behind `server`: its client certificate and key, and
/// the kubelet.conf pointing at them.
pub fn kubelet_files(root: &Path, ca: &ClusterCa, server: &str, name: &str) {
    let (cert, key) = ca.kubelet_client(name);
    let pem = "/var/lib/kubelet/pki/kubelet-client-current.pem";
    for (rel, content) in [(&pem[1..], cert + &key), ("etc/kubernetes/kubelet.conf", kubeconfig(ca, server, pem))] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// A kubelet.conf as the kubelet writes it after TLS bootstrap: the CA
/// inline, the client certificate and key in the file at `pem`.
pub fn kubeconfig(ca: &ClusterCa, server: &str, pem: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://{server}\n  \
         name: default-cluster\ncontexts:\n- context:\n    cluster: default-cluster\n    namespace: default\n    \
         user: default-auth\n  name: default-context\ncurrent-context: default-context\nkind: Config\npreferences: {{}}\n\
         users:\n- name: default-auth\n  user:\n    client-certificate: {pem}\n    client-key: {pem}\n",
        base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem)
    )
}

impl Node {
    /// The user data where cloud-init keeps its copies on a deployed
    /// node: `instance` a link to `instances/<id>/` with `user-data.txt`
    /// and the processed `user-data.txt.i` (MIME, one 7bit
    /// `text/cloud-config` part, as cloud-init writes it), and an earlier
    /// instance's gzipped copy (cloud-init keeps every instance's
    /// directory); and the files its `write_files` wrote, with their modes.
    pub fn cloud_init_copies(&self) {
        use std::io::Write as _;
        let ud = self.read("var/lib/cloud/instance/user-data.txt");
        let doc: serde_json::Value = serde_saphyr::from_str(&ud).unwrap();
        for f in doc["write_files"].as_array().into_iter().flatten() {
            let path = f["path"].as_str().unwrap().trim_start_matches('/');
            self.write(path, f["content"].as_str().unwrap());
            let mode = u32::from_str_radix(f["permissions"].as_str().unwrap_or("0644"), 8).unwrap();
            std::fs::set_permissions(self.path(path), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::fs::remove_dir_all(self.path("var/lib/cloud/instance")).unwrap();
        self.write("var/lib/cloud/instances/i-e2e-2/user-data.txt", &ud);
        let mime = format!(
            "Content-Type: multipart/mixed; boundary=\"===============0463258251697537==\"\nMIME-Version: 1.0\n\
             Number-Attachments: 1\n\n--===============0463258251697537==\nContent-Type: text/cloud-config\n\
             MIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Disposition: attachment; \
             filename=\"part-001\"\n\n{ud}\n--===============0463258251697537==--\n"
        );
        self.write("var/lib/cloud/instances/i-e2e-2/user-data.txt.i", &mime);
        std::os::unix::fs::symlink("/var/lib/cloud/instances/i-e2e-2", self.path("var/lib/cloud/instance")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(ud.as_bytes()).unwrap();
        let old = self.path("var/lib/cloud/instances/i-e2e-1/user-data.txt");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(old, gz.finish().unwrap()).unwrap();
    }

    /// Every file under the root holding `needle` (symbolic links not
    /// followed), relative to the root, sorted.
    pub fn files_holding(&self, needle: &str) -> Vec<String> {
        let out = crate::output(
            std::process::Command::new("grep").args(["-rlFZ", "-D", "skip", "--"]).arg(needle).arg(self.root.path()),
        );
        assert!(out.status.code().is_some_and(|c| c < 2), "grep: {}", crate::text(&out.stderr));
        let base = format!("{}/", self.arg());
        let mut files: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).trim_start_matches(&base).to_owned())
            .collect();
        files.sort();
        files
    }
}
