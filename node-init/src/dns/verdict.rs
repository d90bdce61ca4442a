//! What an answer means for the node: the verdicts the `dns` stage and
//! `verify`'s DNS checks both give, so the two never disagree on what a
//! right answer is.

use std::net::{IpAddr, SocketAddr};

use super::{Answer, names_match};

/// The node's own address among the answers, or why not.
pub fn forward_verdict(answer: &Answer, own: &[IpAddr]) -> Result<IpAddr, String> {
    let got = answer.addresses();
    if got.is_empty() {
        return Err(answer.to_string());
    }
    got.iter().copied().find(|ip| own.contains(ip)).ok_or_else(|| {
        let own: Vec<String> = own.iter().map(ToString::to_string).collect();
        format!("answered {answer}, none of which is this node's ({})", own.join(", "))
    })
}

/// A PTR answer that does not name the node back, as a warning; `None`
/// when it does.
pub fn reverse_warning(server: SocketAddr, ip: IpAddr, answer: &Answer, fqdn: &str) -> Option<String> {
    match answer {
        Answer::Names(n) if names_match(n, fqdn) => None,
        Answer::Names(n) => Some(format!("PTR of {ip} via {server} names {} (not {fqdn})", n.join(", "))),
        other => Some(format!("no PTR for {ip} via {server}: {other}")),
    }
}
