//! `duplicate_ip`: no other host answers ARP for one of this node's own
//! IPv4 addresses (MAAS handed the address out twice, or a stale static
//! lease); the MAC that answered is named.
//!
//! The VIP check's trick (a datagram to the discard port makes the kernel
//! ARP) does not work here: the kernel never ARPs for an address it holds,
//! it delivers locally. Asking means sending a frame of our own, which
//! takes a raw packet socket, and binding one to an interface needs a
//! `sockaddr_ll` that neither nix nor socket2 builds without unsafe code,
//! which the workspace denies. So the question is iputils' `arping -D`
//! (RFC 5227 duplicate address detection: sender address 0.0.0.0, so no
//! neighbour's cache is touched) through the runner; without arping the
//! check cannot run and says how to install it.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use async_trait::async_trait;
use futures_util::future::join_all;

use super::{Check, Finding, Inputs, fail, pass, skip};
use crate::runner::{Cmd, Output, tail};

pub struct DuplicateIp;

#[async_trait]
impl Check for DuplicateIp {
    fn name(&self) -> &'static str {
        "duplicate_ip"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let own: Vec<(String, IpAddr)> = i
            .node
            .addresses
            .iter()
            .filter(|a| a.net.addr().is_ipv4())
            .map(|a| (a.interface.clone(), a.net.addr()))
            .collect();
        if own.is_empty() {
            return Ok(skip("no IPv4 address on this node"));
        }
        // arping's own deadline, in whole seconds (its smallest is 1):
        // a probe at once, then listening for the rest of the second. An
        // ARP reply takes milliseconds on a LAN, and the second is what a
        // healthy node's `verify` waits, since nobody answers there.
        let wait: u64 = 1;
        let asks = own.iter().map(|(interface, ip)| async move {
            let cmd = Cmd::new(
                ["arping", "-D", "-I", interface, "-c", "2", "-w", &wait.to_string(), &ip.to_string()],
                Duration::from_secs(wait + 2),
            );
            let out = i.runner.run(&cmd).await.map_err(|e| {
                anyhow::anyhow!("{e:#} (install iputils-arping: the kernel never ARPs for its own address)")
            })?;
            Ok::<_, anyhow::Error>((interface, ip, answered(&cmd, &out)?))
        });
        let mut free = Vec::new();
        let mut taken = Vec::new();
        for r in join_all(asks).await {
            match r? {
                (interface, ip, None) => free.push(format!("{ip} on {interface}")),
                (interface, ip, Some(mac)) => taken.push(format!("{mac} answers ARP for {ip} (on {interface})")),
            }
        }
        Ok(if taken.is_empty() {
            pass(format!("no other host answers ARP for {}", free.join(", ")))
        } else {
            fail(format!("{}: the address is in use twice", taken.join("; ")))
        })
    }
}

/// The MAC in arping -D's answer, `None` when nobody answered; its output
/// is iputils', anything else is an error.
fn answered(cmd: &Cmd, out: &Output) -> Result<Option<String>> {
    let mac = out.stdout.lines().find_map(|l| {
        let rest = l.strip_prefix("Unicast reply from ")?;
        let mac = rest.split_once('[')?.1.split_once(']')?.0;
        Some(mac.to_ascii_lowercase())
    });
    match (out.code, mac) {
        (Some(1), Some(mac)) => Ok(Some(mac)),
        (Some(0), None) if out.stdout.contains("Received 0 response") => Ok(None),
        _ => {
            let status = out.code.map_or_else(|| "a signal".to_owned(), |c| c.to_string());
            let said = tail(&format!("{}{}", out.stdout, out.stderr), 4).replace('\n', "; ");
            bail!("`{cmd}` ended with {status}: {said}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stdout: &str, stderr: &str) -> Output {
        Output { code: Some(code), stdout: stdout.into(), stderr: stderr.into() }
    }

    #[test]
    fn reads_iputils_arping_answers() {
        let cmd = Cmd::new(["arping", "-D"], Duration::from_secs(1));
        let dup = "ARPING 10.0.0.2 from 0.0.0.0 eth0\nUnicast reply from 10.0.0.2 [CA:23:E8:74:F9:45]  0.580ms\n\
                   Sent 1 probes (1 broadcast(s))\nReceived 1 response(s)\n";
        assert_eq!(answered(&cmd, &out(1, dup, "")).unwrap().as_deref(), Some("ca:23:e8:74:f9:45"));
        let free = "ARPING 10.0.0.2 from 0.0.0.0 eth0\nSent 2 probes (2 broadcast(s))\nReceived 0 response(s)\n";
        assert_eq!(answered(&cmd, &out(0, free, "")).unwrap(), None);
        let e = answered(&cmd, &out(2, "", "arping: Device eth9 not available.\n")).unwrap_err().to_string();
        assert_eq!(e, "`arping -D` ended with 2: arping: Device eth9 not available.");
    }
}
