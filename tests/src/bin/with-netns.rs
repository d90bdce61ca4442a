//! The tests' network namespace as a program, for benchmarks and by-hand
//! runs: `with-netns CMD [ARGS...]` makes the namespace `Netns` makes (the
//! node's end of a veth at 10.201.N.2 with a default route to the host's
//! end, 10.201.N.1), runs CMD on the host with NETNS, NODE_IP, NODE_IF and
//! HOST_IP in its environment (`ip netns exec "$NETNS" ...` enters it),
//! removes the namespace when CMD ends, and exits with CMD's status. A run
//! killed before it can remove its namespace leaves it to the next one.

use std::process::{Command, ExitCode};

use node_init_tests::net::Netns;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!("usage: with-netns CMD [ARGS...]");
        return ExitCode::from(2);
    };
    let ns = Netns::new();
    let status = Command::new(&cmd)
        .args(args)
        .env("NETNS", &ns.name)
        .env("NODE_IP", ns.node_ip.to_string())
        .env("NODE_IF", &ns.node_if)
        .env("HOST_IP", ns.host_ip.to_string())
        .status();
    // The namespace goes before the exit either way.
    drop(ns);
    match status {
        Ok(s) => ExitCode::from(s.code().map_or(1, |c| c as u8)),
        Err(e) => {
            eprintln!("with-netns: starting {}: {e}", cmd.to_string_lossy());
            ExitCode::from(1)
        }
    }
}
