//! bind9 as MAAS runs it, for the VM tier: `named -g` serving the MAAS
//! domain's zone (the node's A record and the name server's) and the node's
//! reverse zone on the host side of the guest's link, with its query log
//! in a file the test reads to see what the guest asked.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `named`; killed when dropped.
pub struct Named {
    child: Child,
    log: PathBuf,
}

impl Named {
    /// Serves `node1.<domain>` at `guest` and its PTR, listening on
    /// `listen`; returns once named says it is running.
    pub fn start(dir: &Path, listen: Ipv4Addr, guest: Ipv4Addr, domain: &str) -> Self {
        let d = dir.join("named");
        std::fs::create_dir_all(&d).unwrap();
        let [a, b, c, last] = guest.octets();
        let soa = format!("$TTL 30\n@ IN SOA ns1.{domain}. root.{domain}. 1 30 30 300 30\n@ IN NS ns1.{domain}.\n");
        std::fs::write(d.join("domain.zone"), format!("{soa}ns1 IN A {listen}\nnode1 IN A {guest}\n")).unwrap();
        std::fs::write(d.join("rev.zone"), format!("{soa}{last} IN PTR node1.{domain}.\n")).unwrap();
        let conf = format!(
            "options {{\n  directory \"{d}\";\n  listen-on port 53 {{ {listen}; }};\n  listen-on-v6 {{ none; }};\n  \
             recursion no;\n  dnssec-validation no;\n  querylog yes;\n  pid-file \"{d}/named.pid\";\n  \
             session-keyfile \"{d}/session.key\";\n}};\n\
             zone \"{domain}\" {{ type primary; file \"{d}/domain.zone\"; }};\n\
             zone \"{c}.{b}.{a}.in-addr.arpa\" {{ type primary; file \"{d}/rev.zone\"; }};\n",
            d = d.display()
        );
        std::fs::write(d.join("named.conf"), conf).unwrap();
        let log = d.join("named.log");
        let child = Command::new("named")
            .args(["-g", "-c"])
            .arg(d.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("named (apt-get install bind9)");
        let started = Instant::now();
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("running") {
            assert!(started.elapsed() < Duration::from_secs(20), "named did not start: {}", Self::read(&log));
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, log }
    }

    fn read(log: &Path) -> String {
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// The query log's lines so far.
    pub fn queries(&self) -> String {
        Self::read(&self.log).lines().filter(|l| l.contains("query:")).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The name a PTR query for `ip` asks about (`d.c.b.a.in-addr.arpa`).
pub fn in_addr_arpa(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}
