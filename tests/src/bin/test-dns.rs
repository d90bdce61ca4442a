//! The tests' DNS stand-in as a program, for benchmarks and by-hand runs:
//! `test-dns ADDR [NAME=IP ...] [--ptr IP=NAME ...] [--soa ZONE]` serves
//! until killed; `test-dns --silent ADDR` reads queries and never answers.

use std::net::SocketAddr;

use node_init_tests::dns::{Mode, TestDns};

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let silent = args.peek().is_some_and(|a| a == "--silent");
    if silent {
        args.next();
    }
    let addr: SocketAddr = args.next().expect("usage: test-dns [--silent] ADDR ...").parse().expect("ADDR is ip:port");
    let dns = TestDns::start_on(addr);
    if silent {
        dns.mode(Mode::Silent);
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ptr" => {
                let v = args.next().expect("--ptr IP=NAME");
                let (ip, name) = v.split_once('=').expect("--ptr IP=NAME");
                dns.ptr(ip.parse().expect("an IP"), name);
            }
            "--soa" => dns.soa(&args.next().expect("--soa ZONE")),
            record => {
                let (name, ip) = record.split_once('=').expect("NAME=IP");
                dns.address(name, ip.parse().expect("an IP"));
            }
        }
    }
    eprintln!("serving on {}", dns.addr);
    loop {
        std::thread::park();
    }
}
