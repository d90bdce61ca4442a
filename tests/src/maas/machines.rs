//! The machine handlers of the MAAS API stand-in, after MAAS's own
//! (canonical/maas, `src/maasserver/api/machines.py` and `machine.py`):
//!
//! - `GET machines/` (filtered by `agent_name`, as
//!   `filtered_nodes_list_from_request` in `api/nodes.py` does), `GET
//!   machines/{id}/`;
//! - `POST machines/?op=allocate`: `AcquireNodeForm`'s constraints
//!   (`cpu_count`, `mem` in MiB, `storage` as `[label:]GB[(tags)]` for one
//!   disk, `zone`, `pool`, `tags` repeated or comma-separated, `system_id`)
//!   over the Ready machines, the first match Allocated to the user with
//!   `agent_name`; 409 `NodesNotAvailable` when none matches;
//! - `POST machines/{id}/?op=deploy`: a Ready machine is acquired first,
//!   as MAAS does; a machine not Allocated (or Failed deployment) is 409
//!   "Can't deploy a machine that is in the '...' state"; `distro_series`
//!   must name an uploaded, complete image for `osystem` `custom`; the
//!   `user_data` is base64-decoded and, stricter than MAAS, checked as the
//!   node would read it: a `#cloud-config` whose `write_files` writes the
//!   node-init config, which the real `node-init config` must accept;
//! - `POST machines/{id}/?op=release`: Releasing, then Ready, owner and
//!   `agent_name` cleared (`Node.release`); a Ready or releasing machine is
//!   a success, as the handler makes it.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{Value, json};

use super::fleet::{Deploy, Fleet, Status, USER};
use super::{Answer, answer, text};

pub(super) fn dict(f: &Fleet, i: usize) -> Value {
    let m = &f.machines[i];
    let (status, status_name) = m.status.code();
    let deployed = m.deploys.last().filter(|_| matches!(m.status, Status::Deploying | Status::Deployed));
    json!({
        "system_id": m.system_id, "hostname": m.spec.hostname, "fqdn": format!("{}.maas", m.spec.hostname),
        "domain": {"name": "maas"}, "status": status, "status_name": status_name,
        "status_message": if m.status == Status::FailedDeployment { "Installation failed" } else { "" },
        "cpu_count": m.spec.cpu_count, "memory": m.spec.memory_mib,
        "storage": (m.spec.disk_gb * 1000) as f64, "architecture": "amd64/generic",
        "zone": {"name": m.spec.zone, "id": 1}, "pool": {"name": m.spec.pool, "id": 1},
        "tag_names": m.spec.tags, "ip_addresses": m.ip().map(|ip| ip.to_string()).into_iter().collect::<Vec<_>>(),
        "owner": m.owner, "osystem": deployed.map_or("", |d| d.osystem.as_str()),
        "distro_series": deployed.map_or("", |d| d.distro_series.as_str()),
        "resource_uri": format!("/MAAS/api/2.0/machines/{}/", m.system_id),
    })
}

fn json_ok(v: Value) -> Answer {
    answer(StatusCode::OK, "application/json", v.to_string())
}

pub(super) fn list(f: &Fleet, q: &[(String, String)]) -> Answer {
    let agent = q.iter().find(|(k, _)| k == "agent_name").map(|(_, v)| v.as_str());
    let all: Vec<Value> = (0..f.machines.len())
        .filter(|i| agent.is_none_or(|a| f.machines[*i].agent_name == a))
        .map(|i| dict(f, i))
        .collect();
    json_ok(Value::from(all))
}

pub(super) fn find(f: &Fleet, system_id: &str) -> Option<usize> {
    f.machines.iter().position(|m| m.system_id == system_id)
}

pub(super) fn not_found() -> Answer {
    text(StatusCode::NOT_FOUND, "No Machine matches the given query.")
}

/// The first size of a storage constraint, in GB.
fn storage_gb(s: &str) -> Option<f64> {
    let first = s.split(',').next()?;
    let size = first.rsplit_once(':').map_or(first, |(_, s)| s);
    size.split('(').next()?.parse().ok()
}

pub(super) fn allocate(f: &mut Fleet, form: &[(String, String)]) -> Answer {
    let get = |k: &str| form.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let one = |k: &str| get(k).into_iter().next();
    let tags: Vec<String> = get("tags")
        .iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let cpu: u32 = one("cpu_count").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u32;
    let mem: u64 = one("mem").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
    let storage = one("storage").map(|s| storage_gb(&s));
    if storage == Some(None) {
        return answer(
            StatusCode::BAD_REQUEST,
            "application/json",
            json!({"storage": [format!("Malformed storage constraint, \"{}\".", one("storage").unwrap_or_default())]})
                .to_string(),
        );
    }
    let storage = storage.flatten().unwrap_or(0.0);
    let (zone, pool, sid) = (one("zone"), one("pool"), one("system_id"));
    let fit = f.machines.iter().position(|m| {
        m.status == Status::Ready
            && m.spec.cpu_count >= cpu
            && m.spec.memory_mib >= mem
            && m.spec.disk_gb as f64 >= storage
            && zone.as_ref().is_none_or(|z| *z == m.spec.zone)
            && pool.as_ref().is_none_or(|p| *p == m.spec.pool)
            && sid.as_ref().is_none_or(|s| *s == m.system_id)
            && tags.iter().all(|t| m.spec.tags.contains(t))
    });
    let Some(i) = fit else {
        let given: BTreeMap<&str, Vec<String>> = ["cpu_count", "mem", "storage", "zone", "pool", "tags", "system_id"]
            .into_iter()
            .map(|k| (k, get(k)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let words: Vec<String> = given.iter().map(|(k, v)| format!("{k}={}", v.join(","))).collect();
        return text(
            StatusCode::CONFLICT,
            &format!("No available machine matches constraints: {:?} (resolved to \"{}\")", given, words.join(" ")),
        );
    };
    let m = &mut f.machines[i];
    m.status = Status::Allocated;
    m.since = Instant::now();
    m.owner = Some(USER.into());
    m.agent_name = one("agent_name").unwrap_or_default();
    f.log.push(format!("allocate {}", f.machines[i].system_id));
    let comment = one("comment").unwrap_or_default();
    f.event(i, 20, "Allocated", comment);
    json_ok(dict(f, i))
}

pub(super) fn deploy(f: &mut Fleet, i: usize, form: &[(String, String)], images: &[(String, bool)]) -> Answer {
    let one = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if f.machines[i].status == Status::Ready {
        let m = &mut f.machines[i];
        m.status = Status::Allocated;
        m.owner = Some(USER.into());
        m.agent_name = one("agent_name").unwrap_or_default();
    }
    let status = f.machines[i].status;
    if !matches!(status, Status::Allocated | Status::FailedDeployment) {
        return text(
            StatusCode::CONFLICT,
            &format!("Can't deploy a machine that is in the '{}' state", status.code().1),
        );
    }
    let osystem = one("osystem").unwrap_or_else(|| "ubuntu".into());
    let series = one("distro_series").unwrap_or_else(|| "jammy".into());
    let complete: Vec<&str> = images.iter().filter(|(_, c)| *c).map(|(n, _)| n.as_str()).collect();
    let known = complete.iter().any(|n| n.strip_prefix("custom/").unwrap_or(n) == series);
    if osystem != "custom" || !known {
        let why = format!("'{osystem}/{series}' is not a valid distro_series. It should be one of: {complete:?}");
        return answer(StatusCode::BAD_REQUEST, "application/json", json!({"distro_series": [why]}).to_string());
    }
    let user_data = match one("user_data").map(|u| base64::engine::general_purpose::STANDARD.decode(u.trim())) {
        Some(Ok(raw)) => String::from_utf8_lossy(&raw).into_owned(),
        Some(Err(e)) => return text(StatusCode::BAD_REQUEST, &format!("user_data is not base64: {e}")),
        None => String::new(),
    };
    let config = match node_config(&user_data) {
        Ok(c) => c,
        Err(why) => {
            let sid = f.machines[i].system_id.clone();
            f.violations.push(format!("deploy {sid}: {why}"));
            return text(StatusCode::BAD_REQUEST, &format!("user_data: {why}"));
        }
    };
    let comment = one("comment").unwrap_or_default();
    let m = &mut f.machines[i];
    m.deploys.push(Deploy { osystem, distro_series: series, user_data, config, comment: comment.clone() });
    m.status = Status::Deploying;
    m.since = Instant::now();
    f.log.push(format!("deploy {}", f.machines[i].system_id));
    f.event(i, 20, "Deploying", comment);
    json_ok(dict(f, i))
}

/// The node-init config the user data writes, as cloud-init would write
/// it and the real `node-init config` would read it.
fn node_config(user_data: &str) -> Result<Value, String> {
    if !user_data.starts_with("#cloud-config\n") {
        return Err("does not start with #cloud-config".into());
    }
    let cloud: Value = serde_saphyr::from_str(user_data).map_err(|e| format!("not YAML: {e}"))?;
    let file = cloud
        .pointer("/write_files/0")
        .filter(|f| f["path"] == "/etc/node-init/config.d/50-userdata.yaml")
        .ok_or("no write_files entry for /etc/node-init/config.d/50-userdata.yaml")?;
    if file["permissions"] != "0600" {
        return Err(format!("the config is written with permissions {}, not 0600", file["permissions"]));
    }
    let content = file["content"].as_str().ok_or("the config has no content")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, content).map_err(|e| e.to_string())?;
    let out = crate::node_init(&["config", "--config", &path.display().to_string(), "--output", "json"]);
    if !out.status.success() {
        return Err(format!("node-init config refuses it: {}", crate::text(&out.stderr).trim()));
    }
    serde_saphyr::from_str(content).map_err(|e| format!("the config is not YAML: {e}"))
}

pub(super) fn release(f: &mut Fleet, i: usize, form: &[(String, String)]) -> Answer {
    let comment = form.iter().find(|(k, _)| k == "comment").map(|(_, v)| v.clone()).unwrap_or_default();
    match f.machines[i].status {
        Status::Ready | Status::Releasing => {}
        _ => {
            let m = &mut f.machines[i];
            m.status = Status::Releasing;
            m.since = Instant::now();
            m.owner = None;
            m.agent_name.clear();
            m.pending.clear();
            m.release_comments.push(comment.clone());
            f.log.push(format!("release {}", f.machines[i].system_id));
            f.event(i, 20, "Releasing", comment);
        }
    }
    json_ok(dict(f, i))
}
