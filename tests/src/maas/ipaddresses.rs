//! Subnets, IP ranges and reserved addresses of the MAAS API stand-in,
//! after MAAS's handlers (canonical/maas, `src/maasserver/api/subnets.py`,
//! `ipranges.py`, `ip_addresses.py`): `GET subnets/`, `GET ipranges/`,
//! `GET subnets/{id}/?op=ip_addresses` (every address MAAS knows there:
//! machines', reserved, held by something else), `GET ipaddresses/` (the
//! user's reserved ones), `POST ipaddresses/?op=reserve` (`ip` and
//! `hostname`: 400 "No known subnet for IP address", 403 inside a dynamic
//! range, 404 "The IP address ... is already in use.") and `?op=release`
//! (204, or 400 when the user has no such reservation).

use std::net::IpAddr;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::fleet::{Fleet, Reservation, Subnet, USER};
use super::{Answer, answer, text};

fn contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else { return false };
    let (Ok(net), Ok(len)) = (net.parse::<IpAddr>(), len.parse::<u32>()) else { return false };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn subnet_dict(s: &Subnet) -> Value {
    json!({"id": s.id, "name": s.cidr, "cidr": s.cidr, "vlan": {"id": 5001, "vid": 0, "fabric": "fabric-0"},
           "space": "undefined", "gateway_ip": null, "managed": true, "allow_dns": true})
}

fn ok(v: Value) -> Answer {
    answer(StatusCode::OK, "application/json", v.to_string())
}

pub(super) fn subnets(f: &Fleet) -> Answer {
    ok(f.subnets.iter().map(subnet_dict).collect())
}

pub(super) fn ipranges(f: &Fleet) -> Answer {
    let ranges: Vec<Value> = f
        .subnets
        .iter()
        .filter_map(|s| {
            let (a, b) = s.dynamic?;
            Some(json!({"id": s.id * 10, "type": "dynamic", "start_ip": a, "end_ip": b, "comment": "",
                        "user": USER, "subnet": subnet_dict(s)}))
        })
        .collect();
    ok(ranges.into())
}

/// Every address MAAS knows in `cidr`, as `render_json_for_related_ips`.
fn used(f: &Fleet, cidr: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (m, ip) in f.machines.iter().filter_map(|m| Some((m, m.ip()?))).filter(|(_, ip)| contains(cidr, *ip)) {
        out.push(json!({"ip": ip, "alloc_type": 1, "alloc_type_name": "Automatic",
                        "node_summary": {"system_id": m.system_id, "hostname": m.spec.hostname,
                                         "fqdn": format!("{}.maas", m.spec.hostname), "node_type": 0}}));
    }
    for r in f.reservations.iter().filter(|r| contains(cidr, r.ip)) {
        out.push(json!({"ip": r.ip, "alloc_type": 4, "alloc_type_name": "User reserved", "user": USER,
                        "dns_records": [{"id": 1, "name": r.hostname, "domain": "maas"}]}));
    }
    for (ip, what) in f.held.iter().filter(|(ip, _)| contains(cidr, *ip)) {
        out.push(json!({"ip": ip, "alloc_type": 6, "alloc_type_name": "Observed", "dns_records": [{"fqdn": what}]}));
    }
    out
}

pub(super) fn subnet_ips(f: &Fleet, id: &str) -> Answer {
    match f.subnets.iter().find(|s| s.id.to_string() == id) {
        Some(s) => ok(used(f, &s.cidr).into()),
        None => text(StatusCode::NOT_FOUND, "No Subnet matches the given query."),
    }
}

pub(super) fn list(f: &Fleet) -> Answer {
    ok(f.reservations.iter().map(|r| json!({"ip": r.ip, "alloc_type": 4, "owner": USER})).collect())
}

pub(super) fn reserve(f: &mut Fleet, form: &[(String, String)]) -> Answer {
    let one = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(ip) = one("ip").or_else(|| one("ip_address")) else {
        return text(StatusCode::BAD_REQUEST, "Must supply either the 'subnet' or the 'ip' parameter.");
    };
    let Ok(addr) = ip.parse::<IpAddr>() else {
        return answer(
            StatusCode::BAD_REQUEST,
            "application/json",
            json!({"ip_address": ["Enter a valid IPv4 or IPv6 address."]}).to_string(),
        );
    };
    let Some(s) = f.subnets.iter().find(|s| contains(&s.cidr, addr)) else {
        return text(StatusCode::BAD_REQUEST, &format!("No known subnet for IP address: {ip}."));
    };
    if s.dynamic.is_some_and(|(a, b)| a <= addr && addr <= b) {
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "IP address {ip} belongs to an existing dynamic range. To reserve this IP address, a MAC address is required. (Create a device instead.)"
            ),
        );
    }
    let cidr = s.cidr.clone();
    f.log.push(format!("reserve {ip}"));
    if used(f, &cidr).iter().any(|u| u["ip"] == json!(addr)) {
        return text(StatusCode::NOT_FOUND, &format!("The IP address {ip} is already in use."));
    }
    f.reservations.push(Reservation { ip: addr, hostname: one("hostname").unwrap_or_default() });
    let sub = f.subnets.iter().find(|s| s.cidr == cidr).map(subnet_dict);
    ok(json!({"alloc_type": 4, "alloc_type_name": "User reserved", "ip": ip, "owner": USER, "subnet": sub}))
}

pub(super) fn release(f: &mut Fleet, form: &[(String, String)]) -> Answer {
    let Some(ip) = form.iter().find(|(n, _)| n == "ip").map(|(_, v)| v.clone()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "application/json",
            json!({"ip": ["This field is required."]}).to_string(),
        );
    };
    let before = f.reservations.len();
    f.reservations.retain(|r| r.ip.to_string() != ip);
    if f.reservations.len() == before {
        return text(
            StatusCode::BAD_REQUEST,
            &format!(
                "IP address {ip} does not exist, is not the correct type of address, or does not belong to the requesting user.\nIf you are sure you want to release this address, use force=true as a MAAS administrator."
            ),
        );
    }
    f.log.push(format!("release-ip {ip}"));
    answer(StatusCode::NO_CONTENT, "text/plain", "")
}
