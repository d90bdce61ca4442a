//! `node-init verify`'s stricter checks, each driven as the real binary in
//! a namespace against something real: a wildcard and a search domain in
//! the DNS stand-in and the node's resolv.conf, a MAAS whose clock is ten
//! minutes off, a registry behind the CONNECT proxy, a second host holding
//! the node's address, a tmpfs and a throttled ext4 loop device under
//! /var/lib. Each also shows its `error`: what it says when it cannot look.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use node_init_tests::clock::clock_server;
use node_init_tests::dns::Mode;
use node_init_tests::net::{Background, ProxyMode, connect_proxy, tls_http_server};
use node_init_tests::preflight::{FQDN, Preflight, outcome};
use node_init_tests::*;

const HASH: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn worker(endpoint: &str) -> String {
    format!(
        "kubernetes:\n  role: worker\n  endpoint: {endpoint}\n  token: abcdef.0123456789abcdef\n  \
         ca_cert_hashes: [\"{HASH}\"]\n"
    )
}

fn control_plane() -> String {
    format!(
        "kubernetes:\n  role: control-plane\n  endpoint: 10.0.0.1:6443\n  token: abcdef.0123456789abcdef\n  \
         ca_cert_hashes: [\"{HASH}\"]\n  certificate_key: \"{}\"\n",
        "a".repeat(64)
    )
}

/// The node's FQDN and the stand-in as its MAAS DNS, then `extra`.
fn node(w: &Preflight, extra: &str) -> String {
    format!("hostname: {FQDN}\ndns:\n  nameservers: [\"{}\"]\n{extra}", w.ns.host_ip)
}

fn side(w: &Preflight) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(w.ns.host_ip), 0)
}

#[test]
fn verify_fails_on_a_wildcard_in_the_zone_or_a_search_domain_and_names_the_answer() {
    let w = Preflight::knowing_the_node();
    let (_, v) = w.verify_node("", "5s");
    let (s, r) = outcome(&v, "dns_wildcard");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("no search domains"), "{r}");

    // A search domain whose zone has a wildcard: what glibc tries after
    // the name itself fails answers, though the MAAS zone does not.
    w.resolv_conf(&format!("nameserver {}\nsearch corp.example\n", w.ns.host_ip));
    w.dns.wildcard("corp.example", "10.9.9.9".parse().unwrap());
    let (code, v) = w.verify_node("", "5s");
    assert_eq!(code, Some(1));
    let (s, r) = outcome(&v, "dns_wildcard");
    assert_eq!(s, "fail", "{r}");
    assert!(r.contains(".maas.corp.example answered 10.9.9.9 via "), "{r}");
    assert!(!r.contains(".maas answered"), "the name itself is NXDOMAIN: {r}");

    // A wildcard in the MAAS zone itself answers the name with its dot.
    let w = Preflight::knowing_the_node();
    w.dns.wildcard("maas", "10.8.8.8".parse().unwrap());
    let (_, v) = w.verify_node("", "5s");
    let (s, r) = outcome(&v, "dns_wildcard");
    assert_eq!(s, "fail", "{r}");
    assert!(
        r.starts_with("a name nobody registered resolves: nodeinit-") && r.contains(".maas answered 10.8.8.8"),
        "{r}"
    );

    w.dns.mode(Mode::Silent);
    let (_, v) = w.verify_node("", "2s");
    let (s, r) = outcome(&v, "dns_wildcard");
    assert_eq!(s, "error", "{r}");
    assert!(r.starts_with("could not run: nodeinit-") && r.contains("no answer within"), "{r}");
}

#[test]
fn verify_fails_a_worker_whose_endpoint_name_resolves_to_itself() {
    let w = Preflight::knowing_the_node();
    w.dns.address("api.maas", IpAddr::V4(w.ns.node_ip));
    w.dns.address("api2.maas", IpAddr::V4(w.vip(100)));
    let (_, v) = w.verify_node(&worker("api.maas:6443"), "5s");
    let (s, r) = outcome(&v, "dns_forward");
    assert_eq!(s, "fail", "{r}");
    let want =
        format!("kubernetes.endpoint api.maas via {}:53: {}, this worker's own address", w.ns.host_ip, w.ns.node_ip);
    assert!(r.contains(&want), "{r}");

    let (_, v) = w.verify_node(&worker("api2.maas:6443"), "5s");
    let (s, r) = outcome(&v, "dns_forward");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains(&format!("endpoint api2.maas {} via", w.vip(100))), "{r}");

    let (_, v) = w.verify_node(&worker("api3.maas:6443"), "5s");
    let (s, r) = outcome(&v, "dns_forward");
    assert_eq!(s, "fail");
    assert!(r.contains("kubernetes.endpoint api3.maas via") && r.ends_with("NXDOMAIN"), "{r}");
}

#[test]
fn verify_fails_a_clock_ten_minutes_from_maas() {
    let w = Preflight::knowing_the_node();
    let bg = Background::new();
    let ahead = clock_server(&bg, side(&w), 600);
    w.maas_datasource(&format!("http://{ahead}/MAAS/metadata/"));
    let (code, v) = w.verify_node("", "5s");
    assert_eq!(code, Some(1));
    let (s, r) = outcome(&v, "time_sync");
    assert_eq!(s, "fail", "{r}");
    let host = w.ns.host_ip;
    assert!(r.contains("behind MAAS") && r.contains(&format!("MAAS {host}'s (max 2s)")), "{r}");
    let secs: f64 = r.split("; clock ").nth(1).and_then(|t| t.split('s').next()).unwrap().parse().unwrap();
    assert!((599.0..=601.0).contains(&secs), "{r}");
    // Neither systemd nor chrony runs here: the NTP status is unknown.
    assert!(r.starts_with("NTP status unknown ("), "{r}");

    // time.max_skew widens the bound; the offset is then no failure, and
    // with the NTP status unknown the check could not tell.
    let (_, v) = w.verify_node("time: {max_skew: 15m}\n", "5s");
    let (s, r) = outcome(&v, "time_sync");
    assert_eq!(s, "error", "{r}");
    assert!(r.starts_with("could not run: NTP status unknown (") && r.contains("(max 15m)"), "{r}");

    let on_time = clock_server(&bg, side(&w), 0);
    w.maas_datasource(&format!("http://{on_time}/MAAS/metadata/"));
    let (_, v) = w.verify_node("", "5s");
    let (s, r) = outcome(&v, "time_sync");
    assert_eq!(s, "error", "{r}");
    assert!(
        r.contains("timedatectl") && r.contains("chronyc") && r.contains(&format!("MAAS {host}'s (max 2s)")),
        "{r}"
    );
    assert!(!r.contains('\n'), "one line: {r}");

    let closed = std::net::TcpListener::bind(side(&w)).unwrap().local_addr().unwrap();
    w.maas_datasource(&format!("http://{closed}/MAAS/metadata/"));
    let (_, v) = w.verify_node("", "5s");
    let (s, r) = outcome(&v, "time_sync");
    assert_eq!(s, "error", "{r}");
    assert!(r.contains("offset from MAAS unknown (GET http://") && r.contains("refused"), "{r}");
}

#[test]
fn verify_asks_each_registry_for_v2_through_the_proxy() {
    let w = Preflight::knowing_the_node();
    let bg = Background::new();
    let names = ["registry.example.test"];
    let registry = |status: &str| {
        let (addr, ca) = tls_http_server(&bg, side(&w), &names, status);
        (connect_proxy(&bg, side(&w), ProxyMode::Allow(addr)), ca)
    };
    let (open, ca) = registry("200 OK");
    let (tokens, tokens_ca) = registry("401 Unauthorized");
    let (missing, missing_ca) = registry("404 Not Found");
    let (_, other_ca) = registry("200 OK");
    let run = |proxy: SocketAddr, ca: Option<&str>, setup: &str| {
        let ca = ca.map_or_else(String::new, |ca| format!("  ca_cert: |\n{}", yaml_block(ca, 4)));
        let config = node(
            &w,
            &format!(
                "{}  image_repository: registry.example.test/k8s\nproxy:\n  https: http://{proxy}\n{ca}",
                worker("10.0.0.1:6443"),
            ),
        );
        let (_, v) = w.verify_after(setup, &config, &["--timeout", "5s"]);
        let (s, r) = outcome(&v, "registry");
        (s.to_owned(), r.to_owned())
    };
    let (s, r) = run(open, Some(&ca), "true");
    assert_eq!(s, "pass", "{r}");
    assert_eq!(r, format!("registry.example.test answers /v2/ (HTTP/1.1 200 OK) through http://{open}/"));
    let (s, r) = run(tokens, Some(&tokens_ca), "true");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("(HTTP/1.1 401 Unauthorized)"), "{r}");
    let (s, r) = run(missing, Some(&missing_ca), "true");
    assert_eq!(s, "fail");
    assert!(r.contains("answered \"HTTP/1.1 404 Not Found\": not a registry API"), "{r}");
    let (s, r) = run(open, Some(&other_ca), "true");
    assert_eq!(s, "fail");
    assert!(r.starts_with("registry.example.test: TLS untrusted"), "{r}");
    // The system bundle alone does not know the stand-in's CA.
    let (s, r) = run(open, None, "true");
    assert_eq!(s, "fail");
    assert!(r.contains("TLS untrusted"), "{r}");
    // No system bundle (an empty /etc/ssl) and no proxy CA: nothing to
    // verify a registry against.
    let (s, r) = run(open, None, "mount -t tmpfs none /etc/ssl");
    assert_eq!(s, "error", "{r}");
    assert_eq!(r, "could not run: no trusted CA: no system bundle and no proxy.ca_cert");
}

#[test]
fn verify_names_the_mac_that_answers_arp_for_the_nodes_own_address() {
    let w = Preflight::knowing_the_node();
    let (_, v) = w.verify_node("", "5s");
    let (s, r) = outcome(&v, "duplicate_ip");
    assert_eq!(s, "pass", "{r}");
    assert_eq!(r, format!("no other host answers ARP for {} on {}", w.ns.node_ip, w.ns.node_if));

    let twice = Ipv4Addr::new(10, 202, w.ns.node_ip.octets()[2], 2);
    let peer = w.ns.peer_holding(twice);
    let (code, v) = w.verify_node("", "5s");
    assert_eq!(code, Some(1));
    let (s, r) = outcome(&v, "duplicate_ip");
    assert_eq!(s, "fail", "{r}");
    assert_eq!(r, format!("{} answers ARP for {twice} (on dn): the address is in use twice", peer.mac));

    // An arping that fails without a word: the check could not ask.
    let (_, v) = w.verify_after("mount --bind /bin/false /usr/bin/arping", &node(&w, ""), &["--timeout", "5s"]);
    let (s, r) = outcome(&v, "duplicate_ip");
    assert_eq!(s, "error", "{r}");
    assert!(r.starts_with("could not run: `arping -D -I ") && r.contains("ended with 1: (no output)"), "{r}");
}

#[test]
fn verify_wants_the_kernel_hostname_to_be_the_name_maas_gave() {
    let w = Preflight::knowing_the_node();
    let (_, v) = w.verify_after("hostname node1", &node(&w, ""), &[]);
    let (s, r) = outcome(&v, "hostname");
    assert_eq!(s, "pass", "{r}");
    assert_eq!(r, "node1.maas is a valid node name and the kernel hostname node1 matches it");
    let (_, v) = w.verify_after("hostname ubuntu", &node(&w, ""), &[]);
    let (s, r) = outcome(&v, "hostname");
    assert_eq!(s, "fail");
    assert!(r.starts_with("the kernel hostname is \"ubuntu\", but the node is node1.maas"), "{r}");
    let (_, v) = w.verify_after("hostname localhost", "hostname: localhost.maas\n", &[]);
    assert!(outcome(&v, "hostname").1.contains("every machine is localhost"), "{v}");
}

/// A blkio cgroup (v1) that holds a process to `iops` writes a second on
/// the block device a shell finds in `$dev`. Removed when dropped.
struct Throttle {
    name: String,
    /// Where a run's shell mounts the blkio hierarchy: `ip netns exec`
    /// mounts a fresh /sys, without the host's /sys/fs/cgroup.
    mnt: std::path::PathBuf,
}

const BLKIO: &str = "/sys/fs/cgroup/blkio";

impl Throttle {
    fn new(name: &str, mnt: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(std::path::Path::new(BLKIO).join(name))
            .expect("a blkio cgroup (cgroup v1's blkio must be mounted)");
        std::fs::create_dir_all(&mnt).unwrap();
        Self { name: name.to_owned(), mnt }
    }

    /// Shell lines that throttle `$dev` and move the shell into the group.
    fn enter(&self, iops: u32) -> String {
        let (m, n) = (self.mnt.display(), &self.name);
        format!(
            "mount -t cgroup -o blkio cgroup {m}\necho \"$dev {iops}\" > {m}/{n}/blkio.throttle.write_iops_device\n\
             echo $$ > {m}/{n}/cgroup.procs"
        )
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(std::path::Path::new(BLKIO).join(&self.name));
    }
}

#[test]
fn verify_measures_etcds_fdatasync_on_the_filesystem_under_var_lib() {
    let w = Preflight::knowing_the_node();
    let cp = node(&w, &control_plane());
    let tmpfs = "mount -t tmpfs -o size=64m none /var/lib";
    let (_, v) = w.verify_after(tmpfs, &cp, &["--timeout", "5s"]);
    let (s, r) = outcome(&v, "etcd_disk");
    eprintln!("etcd_disk on tmpfs: {r}");
    assert_eq!(s, "pass", "{r}");
    assert!(r.contains("over 10028 writes of 2300 bytes by 2 writers") && r.ends_with("on /var/lib"), "{r}");
    // Free space is measured where the cluster writes, not on /.
    let (s, r) = outcome(&v, "disk");
    assert_eq!(s, "fail");
    assert_eq!(r, "0 GiB free of 0 GiB on /var/lib, minimum 20 GiB free");

    // ext4 on a loop device held to 20 writes a second: each fdatasync
    // waits for its turn, and the budget (half of 0.9 x 4s) cuts the run.
    let img = w.dir.path().join("slow.img");
    std::fs::File::create(&img).unwrap().set_len(128 << 20).unwrap();
    run(std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    let throttle = Throttle::new(&w.ns.name, w.dir.path().join("blkio"));
    let slow = format!(
        "mount -o loop {} /var/lib\ndev=$(findmnt -no MAJ:MIN /var/lib)\n{}",
        img.display(),
        throttle.enter(20)
    );
    let started = Instant::now();
    let (_, v) = w.verify_after(&slow, &cp, &["--timeout", "4s"]);
    let took = started.elapsed();
    let (s, r) = outcome(&v, "etcd_disk");
    eprintln!("etcd_disk on the throttled loop device: {r} (verify took {took:?})");
    assert_eq!(s, "fail", "{r}");
    assert!(r.contains("cut at the 1s 800ms budget on /var/lib"), "{r}");
    assert!(took < Duration::from_secs(6), "verify took {took:?}");
    // The temp file is gone: mount the image again once the loop device
    // the run's namespace held is released.
    let released = Instant::now();
    while !run(std::process::Command::new("losetup").arg("-j").arg(&img)).trim().is_empty() {
        assert!(released.elapsed() < Duration::from_secs(10), "the loop device stays attached");
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = run(std::process::Command::new("unshare")
        .args(["--mount", "sh", "-ec"])
        .arg(format!("mount -o loop {} /mnt\nls -A /mnt", img.display())));
    assert_eq!(left.trim(), "lost+found", "only what mkfs made is left");

    let (_, v) = w.verify_after("mount -t tmpfs -o ro none /var/lib", &cp, &[]);
    let (s, r) = outcome(&v, "etcd_disk");
    assert_eq!(s, "error", "{r}");
    assert!(r.starts_with("could not run: creating /var/lib/.node-init-etcd-disk-"), "{r}");
    assert!(r.ends_with("Read-only file system (os error 30)"), "{r}");

    let (_, v) = w.verify_after(tmpfs, &node(&w, &worker("10.0.0.1:6443")), &[]);
    assert_eq!(outcome(&v, "etcd_disk"), ("skip", "a worker runs no etcd"));
}
