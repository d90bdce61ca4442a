//! Pure rendering of every file the proxy stage writes, and NO_PROXY
//! synthesis. Nothing here touches the disk; the golden files under
//! `tests/fixtures/proxy/` hold the expected text.

use std::net::IpAddr;

use crate::config::values::{Cidr, DnsName, Endpoint, NoProxyEntry};

pub const HEADER: &str = "# Written by node-init from the proxy settings in its config; changes here are replaced.";
pub const BEGIN: &str = "# BEGIN node-init proxy";
pub const END: &str = "# END node-init proxy";

/// What NO_PROXY is made of, besides the fixed loopback names.
pub struct NoProxyInputs<'a> {
    pub operator: &'a [NoProxyEntry],
    pub addresses: &'a [IpAddr],
    pub fqdn: Option<&'a str>,
    pub endpoint: Option<&'a Endpoint>,
    pub pod_cidr: Cidr,
    pub service_cidr: Cidr,
    pub domain: &'a DnsName,
    pub maas_server: Option<&'a str>,
}

/// NO_PROXY entries, deduplicated in a stable order. Domains appear both
/// bare and with a leading dot: Go and curl match `maas` against
/// `node1.maas`, while wget-style and older matchers want `.maas`. CIDRs
/// stay CIDRs (Go and curl >= 7.86 read them).
pub fn no_proxy(i: &NoProxyInputs<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |e: &str| {
        if !e.is_empty() && !out.iter().any(|x| x == e) {
            out.push(e.to_owned());
        }
    };
    let add_name = |e: &str, add: &mut dyn FnMut(&str)| {
        let bare = e.trim_start_matches("*.").trim_start_matches('.');
        if bare.parse::<IpAddr>().is_ok() || bare.parse::<ipnet::IpNet>().is_ok() || bare == "localhost" || e == "*" {
            add(e);
        } else {
            add(bare);
            add(&format!(".{bare}"));
        }
    };
    for e in ["localhost", "127.0.0.1", "::1"] {
        add(e);
    }
    for e in i.operator {
        add_name(&e.0, &mut add);
    }
    for a in i.addresses {
        add(&a.to_string());
    }
    if let Some(f) = i.fqdn {
        add(f);
    }
    if let Some(ep) = i.endpoint {
        add(&ep.host);
    }
    add(&i.pod_cidr.to_string());
    add(&i.service_cidr.to_string());
    for d in ["svc", "cluster.local", i.domain.as_str()] {
        add_name(d, &mut add);
    }
    if let Some(m) = i.maas_server {
        add(m);
    }
    out
}

/// The hosts apt should reach without the proxy. apt reads no NO_PROXY,
/// only per-host `DIRECT` entries for exact names, so domain suffixes and
/// CIDRs cannot be expressed; the hosts that matter (the MAAS server, which
/// usually serves the package mirror, the VIP, the node) can.
pub fn apt_direct_hosts(i: &NoProxyInputs<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let operator = i.operator.iter().map(|e| e.0.clone());
    let own = i.addresses.iter().map(ToString::to_string);
    let named = i.fqdn.into_iter().chain(i.endpoint.map(|e| e.host.as_str())).chain(i.maas_server).map(str::to_owned);
    for h in operator.chain(own).chain(named) {
        if is_exact_host(&h) && !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// The six variables, lower and upper case, in a fixed order.
pub fn variables(http: Option<&str>, https: Option<&str>, no_proxy: &[String]) -> Vec<(String, String)> {
    let np = no_proxy.join(",");
    let mut v = Vec::new();
    for (name, value) in [("http_proxy", http), ("https_proxy", https), ("no_proxy", Some(np.as_str()))] {
        if let Some(value) = value {
            v.push((name.to_owned(), value.to_owned()));
            v.push((name.to_ascii_uppercase(), value.to_owned()));
        }
    }
    v
}

/// `/etc/environment` with our block replaced (or removed when `vars` is
/// empty) and every other line kept as it was.
pub fn etc_environment(existing: &str, vars: &[(String, String)]) -> String {
    let mut out = without_block(existing);
    if !vars.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(BEGIN);
        out.push('\n');
        for (k, v) in vars {
            out.push_str(&format!("{k}=\"{v}\"\n"));
        }
        out.push_str(END);
        out.push('\n');
    }
    out
}

/// `existing` without the lines between our markers, markers included.
pub fn without_block(existing: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in existing.split_inclusive('\n') {
        match line.trim_end() {
            BEGIN => inside = true,
            END if inside => inside = false,
            _ if !inside => out.push_str(line),
            _ => {}
        }
    }
    out
}

/// `/etc/profile.d/node-init-proxy.sh`, sourced by login shells.
pub fn profile_d(vars: &[(String, String)]) -> String {
    let mut out = format!("{HEADER}\n");
    for (k, v) in vars {
        out.push_str(&format!("export {k}='{}'\n", v.replace('\'', r"'\''")));
    }
    out
}

/// The apt proxy file. Hosts in `direct` bypass the proxy (apt does not
/// read NO_PROXY); only exact host names and IPv4 addresses can be named.
pub fn apt_conf(http: Option<&str>, https: Option<&str>, direct: &[String]) -> String {
    let mut out = format!("// {}\n", &HEADER[2..]);
    for (scheme, url) in [("http", http), ("https", https)] {
        let Some(url) = url else { continue };
        out.push_str(&format!("Acquire::{scheme}::Proxy \"{url}\";\n"));
        for host in direct {
            out.push_str(&format!("Acquire::{scheme}::Proxy::{host} \"DIRECT\";\n"));
        }
    }
    out
}

fn is_exact_host(h: &str) -> bool {
    !h.starts_with('.') && !h.contains(['/', ':', '*']) && h != "localhost" && h.contains('.')
}

/// dnf's `[main]` section with our `proxy` lines replaced (or removed when
/// `proxy` is `None`).
pub fn dnf_conf(existing: &str, proxy: Option<&str>) -> String {
    let kept = without_block(existing);
    let Some(proxy) = proxy else { return kept };
    let block = format!("{BEGIN}\nproxy={proxy}\n{END}\n");
    let mut out = String::new();
    let mut placed = false;
    for line in kept.split_inclusive('\n') {
        out.push_str(line);
        if !placed && line.trim() == "[main]" {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&block);
            placed = true;
        }
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("[main]\n");
        out.push_str(&block);
    }
    out
}

/// `DefaultEnvironment=` for every unit systemd starts.
pub fn systemd_manager(vars: &[(String, String)]) -> String {
    let assignments: Vec<String> = vars.iter().map(|(k, v)| format!("\"{k}={v}\"")).collect();
    format!("{HEADER}\n[Manager]\nDefaultEnvironment={}\n", assignments.join(" "))
}

/// A `[Service]` drop-in. `%` is doubled: unit files expand specifiers, and
/// a percent-encoded password must reach the service unchanged.
pub fn systemd_service(vars: &[(String, String)]) -> String {
    let mut out = format!("{HEADER}\n[Service]\n");
    for (k, v) in vars {
        out.push_str(&format!("Environment=\"{k}={}\"\n", v.replace('%', "%%")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(operator: &'a [NoProxyEntry], domain: &'a DnsName, ep: Option<&'a Endpoint>) -> NoProxyInputs<'a> {
        NoProxyInputs {
            operator,
            addresses: &[],
            fqdn: None,
            endpoint: ep,
            pod_cidr: crate::config::default_pod_cidr(),
            service_cidr: crate::config::default_service_cidr(),
            domain,
            maas_server: None,
        }
    }

    #[test]
    fn no_proxy_minimal() {
        let d: DnsName = "maas".parse().unwrap();
        assert_eq!(
            no_proxy(&inputs(&[], &d, None)).join(","),
            "localhost,127.0.0.1,::1,192.168.0.0/16,10.96.0.0/12,svc,.svc,cluster.local,.cluster.local,maas,.maas"
        );
    }

    #[test]
    fn no_proxy_dedups_and_keeps_both_domain_forms() {
        let d: DnsName = "maas".parse().unwrap();
        let ops: Vec<NoProxyEntry> = [".corp", "*.lab.corp", "10.10.0.0/16", "127.0.0.1", "maas", "10.0.0.5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ep: Endpoint = "10.0.0.5:6443".parse().unwrap();
        let got = no_proxy(&inputs(&ops, &d, Some(&ep)));
        assert_eq!(got[3..9], ["corp", ".corp", "lab.corp", ".lab.corp", "10.10.0.0/16", "maas"]);
        assert_eq!(got.iter().filter(|e| *e == "10.0.0.5").count(), 1);
        assert_eq!(got.iter().filter(|e| *e == "127.0.0.1").count(), 1);
        assert_eq!(got.iter().filter(|e| *e == "maas").count(), 1);
    }

    #[test]
    fn environment_block_is_replaced_and_other_lines_kept() {
        let vars = variables(Some("http://p:3128"), None, &["localhost".into()]);
        let once = etc_environment("PATH=\"/usr/bin\"\nFOO=1", &vars);
        let twice = etc_environment(&once, &vars);
        assert_eq!(once, twice);
        assert!(once.starts_with("PATH=\"/usr/bin\"\nFOO=1\n# BEGIN node-init proxy\n"));
        assert_eq!(etc_environment(&once, &[]), "PATH=\"/usr/bin\"\nFOO=1\n");
    }

    #[test]
    fn dnf_block_goes_under_main() {
        let once = dnf_conf("[main]\ngpgcheck=1\n[other]\nx=1\n", Some("http://p:3128"));
        assert_eq!(
            once,
            "[main]\n# BEGIN node-init proxy\nproxy=http://p:3128\n# END node-init proxy\ngpgcheck=1\n[other]\nx=1\n"
        );
        assert_eq!(dnf_conf(&once, Some("http://p:3128")), once);
        assert_eq!(dnf_conf(&once, None), "[main]\ngpgcheck=1\n[other]\nx=1\n");
    }

    #[test]
    fn unit_drop_ins_escape_percent() {
        let vars = variables(Some("http://u:p%40ss@h:3128/"), None, &[]);
        assert!(systemd_service(&vars).contains("Environment=\"http_proxy=http://u:p%%40ss@h:3128/\""));
        assert!(profile_d(&[("A".into(), "it's".into())]).contains(r"export A='it'\''s'"));
    }
}
