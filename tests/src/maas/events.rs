//! The events query of the MAAS API stand-in, after MAAS's handler
//! (canonical/maas, `src/maasserver/api/events.py`): `GET
//! events/?op=query` with `id` (system ids), `level` (default INFO; events
//! below it are left out), `after`, `before` and `limit` (at most 1000),
//! answering `{count, events, next_uri, prev_uri}`, newest first, each
//! event as `event_to_dict` writes it. The event's name is not in it.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::fleet::Fleet;
use super::{Answer, answer, text};

fn level(name: &str) -> Option<u32> {
    Some(match name {
        "DEBUG" => 10,
        "INFO" => 20,
        "WARNING" => 30,
        "ERROR" => 40,
        "CRITICAL" => 50,
        _ => return None,
    })
}

fn level_name(l: u32) -> &'static str {
    match l {
        10 => "DEBUG",
        20 => "INFO",
        30 => "WARNING",
        40 => "ERROR",
        _ => "CRITICAL",
    }
}

pub(super) fn query(f: &Fleet, q: &[(String, String)]) -> Answer {
    let all = |k: &str| q.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let one = |k: &str| all(k).into_iter().next();
    let Some(min) = level(&one("level").unwrap_or_else(|| "INFO".into())) else {
        return text(StatusCode::BAD_REQUEST, &format!("Unrecognised log level: {}", one("level").unwrap_or_default()));
    };
    let int = |k: &str| one(k).map(|v| v.parse::<u64>().map_err(|_| format!("Invalid {k}")));
    let (after, before, limit) = match (int("after").transpose(), int("before").transpose(), int("limit").transpose()) {
        (Ok(a), Ok(b), Ok(l)) => (a, b, l.unwrap_or(100)),
        _ => return text(StatusCode::BAD_REQUEST, "Expected an integer"),
    };
    if limit > 1000 {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("Requested number of events {limit} is greater than limit: 1000"),
        );
    }
    if after.is_some() && before.is_some() {
        return text(
            StatusCode::BAD_REQUEST,
            "There is undetermined behaviour when both `after` and `before` are specified.",
        );
    }
    let ids = all("id");
    let mut events: Vec<_> = f
        .events
        .iter()
        .filter(|e| ids.is_empty() || ids.contains(&e.system_id))
        .filter(|e| e.level >= min)
        .filter(|e| after.is_none_or(|a| e.id > a) && before.is_none_or(|b| e.id < b))
        .collect();
    if after.is_some() {
        // The oldest `limit` after it, then reversed: newest first.
        events.sort_by_key(|e| e.id);
        events.truncate(limit.max(1) as usize);
        events.reverse();
    } else {
        events.sort_by_key(|e| std::cmp::Reverse(e.id));
        events.truncate(limit.max(1) as usize);
    }
    let dicts: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({"username": "admin", "node": e.system_id, "hostname": e.hostname, "id": e.id,
                   "level": level_name(e.level), "created": "Sat, 21 Nov. 2026 12:00:00", "type": e.kind,
                   "description": e.description})
        })
        .collect();
    let newest = events.first().map(|e| e.id);
    let body = json!({
        "count": dicts.len(), "events": dicts,
        "next_uri": format!("/MAAS/api/2.0/events/?op=query&after={}", newest.or(after).unwrap_or(0)),
        "prev_uri": events.last().map(|e| format!("/MAAS/api/2.0/events/?op=query&before={}", e.id)),
    });
    answer(StatusCode::OK, "application/json", body.to_string())
}
