//! The router of the fleet's part of the MAAS API stand-in (machines,
//! subnets, ranges, addresses, events, `users/?op=whoami`): the operation
//! (`?op=`) and the form fields decoded as Django's `QueryDict` does, then
//! the handler in `machines.rs`, `ipaddresses.rs` or `events.rs`.

use super::fleet::{Fleet, USER};

/// `k=v&k=v` (a query or a form body), decoded.
pub(super) fn params(s: &str) -> Vec<(String, String)> {
    let decode = |x: &str| percent_encoding::percent_decode_str(&x.replace('+', " ")).decode_utf8_lossy().into_owned();
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// The fleet's part of the region API; `None` for a path it does not serve.
pub(super) fn route(
    f: &mut Fleet,
    images: &[(String, bool)],
    method: &hyper::Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Option<super::Answer> {
    use hyper::Method;

    use super::{events, ipaddresses, machines};
    let rest = path.strip_prefix("/MAAS/api/2.0/")?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let q = params(query);
    let op = q.iter().find(|(k, _)| k == "op").map(|(_, v)| v.as_str()).unwrap_or("");
    let form = params(&String::from_utf8_lossy(body));
    f.tick();
    f.delay_next = f.late.iter().find(|(o, _)| o == op && method == Method::POST).map(|(_, d)| *d);
    Some(match (method, parts.as_slice(), op) {
        (&Method::GET, ["users"], "whoami") => super::answer(
            hyper::StatusCode::OK,
            "application/json",
            serde_json::json!({"username": USER, "email": "admin@example.com", "is_superuser": true}).to_string(),
        ),
        (&Method::GET, ["machines"], "") => machines::list(f, &q),
        (&Method::POST, ["machines"], "allocate") => machines::allocate(f, &form),
        (method, ["machines", id], op) => {
            let Some(i) = machines::find(f, id) else { return Some(machines::not_found()) };
            match (method, op) {
                (&Method::GET, "") => {
                    super::answer(hyper::StatusCode::OK, "application/json", machines::dict(f, i).to_string())
                }
                (&Method::POST, "deploy") => machines::deploy(f, i, &form, images),
                (&Method::POST, "release") => machines::release(f, i, &form),
                _ => return None,
            }
        }
        (&Method::GET, ["subnets"], "") => ipaddresses::subnets(f),
        (&Method::GET, ["subnets", id], "ip_addresses") => ipaddresses::subnet_ips(f, id),
        (&Method::GET, ["ipranges"], "") => ipaddresses::ipranges(f),
        (&Method::GET, ["ipaddresses"], "") => ipaddresses::list(f),
        (&Method::POST, ["ipaddresses"], "reserve") => ipaddresses::reserve(f, &form),
        (&Method::POST, ["ipaddresses"], "release") => ipaddresses::release(f, &form),
        (&Method::GET, ["events"], "query") => events::query(f, &q),
        _ => return None,
    })
}
