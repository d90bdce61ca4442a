//! Machines: list, read, allocate, deploy, release (canonical/maas,
//! `src/maasserver/api/machines.py` and `machine.py`).
//!
//! `allocate` takes its constraints as form fields (`AcquireNodeForm`:
//! `cpu_count`, `mem` in MiB, `storage` as `label:GB` with 1000^3 bytes,
//! `zone`, `pool`, repeated `tags`) plus `agent_name` and `comment`, and
//! answers 409 (`NodesNotAvailable`) when no machine matches. `deploy`
//! takes `user_data` base64-encoded, `osystem` and `distro_series`.
//! `release` takes a `comment` for the machine's event log.

use anyhow::{Result, bail};
use serde::Deserialize;
use serde_json::Value;

use super::{Api, json};

/// MAAS's `NODE_STATUS` values this code acts on.
pub mod status {
    pub const READY: i64 = 4;
    pub const DEPLOYED: i64 = 6;
    pub const DEPLOYING: i64 = 9;
    pub const ALLOCATED: i64 = 10;
    pub const FAILED_DEPLOYMENT: i64 = 11;
    pub const RELEASING: i64 = 12;
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Named {
    pub name: String,
}

/// A machine as MAAS's machine handler shows it (the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct Machine {
    pub system_id: String,
    pub hostname: String,
    #[serde(default)]
    pub fqdn: String,
    pub status: i64,
    #[serde(default)]
    pub status_name: String,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub cpu_count: u32,
    /// MiB.
    #[serde(default)]
    pub memory: u64,
    /// Every physical disk together, in MB (1000^2 bytes).
    #[serde(default)]
    pub storage: f64,
    #[serde(default)]
    pub zone: Option<Named>,
    #[serde(default)]
    pub pool: Option<Named>,
    #[serde(default)]
    pub tag_names: Vec<String>,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
}

impl Machine {
    pub fn zone(&self) -> &str {
        self.zone.as_ref().map_or("", |z| z.name.as_str())
    }

    pub fn pool(&self) -> &str {
        self.pool.as_ref().map_or("", |p| p.name.as_str())
    }
}

/// What a machine must have.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pub cpu_count: u32,
    pub mem_mib: u64,
    pub disk_gib: u64,
    pub zone: Option<String>,
    pub pool: Option<String>,
    pub tags: Vec<String>,
}

impl Constraints {
    /// The disk in MAAS's storage constraint: whole GB (1000^3) covering
    /// the GiB asked for.
    pub fn storage_gb(&self) -> u64 {
        (self.disk_gib * (1 << 30)).div_ceil(1_000_000_000)
    }

    /// The constraints as `allocate` reads them.
    fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("cpu_count", self.cpu_count.to_string()),
            ("mem", self.mem_mib.to_string()),
            ("storage", self.storage_gb().to_string()),
        ];
        f.extend(self.zone.iter().map(|z| ("zone", z.clone())));
        f.extend(self.pool.iter().map(|p| ("pool", p.clone())));
        f.extend(self.tags.iter().map(|t| ("tags", t.clone())));
        f
    }

    /// Why `m` does not match, one phrase each; empty when it does. The
    /// disk is compared with all of its storage (MAAS's allocate then asks
    /// for one disk of that size).
    pub fn misses(&self, m: &Machine) -> Vec<String> {
        let mut why = Vec::new();
        if m.cpu_count < self.cpu_count {
            why.push(format!("{} CPUs < {}", m.cpu_count, self.cpu_count));
        }
        if m.memory < self.mem_mib {
            why.push(format!("{} MiB memory < {}", m.memory, self.mem_mib));
        }
        let gb = m.storage / 1000.0;
        if gb < self.storage_gb() as f64 {
            why.push(format!("{gb:.0} GB storage < {} GB ({} GiB)", self.storage_gb(), self.disk_gib));
        }
        if let Some(z) = self.zone.as_ref().filter(|z| *z != m.zone()) {
            why.push(format!("zone {} is not {z}", m.zone()));
        }
        if let Some(p) = self.pool.as_ref().filter(|p| *p != m.pool()) {
            why.push(format!("pool {} is not {p}", m.pool()));
        }
        let missing: Vec<&str> = self.tags.iter().filter(|t| !m.tag_names.contains(t)).map(String::as_str).collect();
        if !missing.is_empty() {
            why.push(format!("lacks tag(s) {}", missing.join(",")));
        }
        why
    }
}

/// What `allocate` came to.
#[derive(Debug)]
pub enum Allocation {
    Machine(Box<Machine>),
    /// 409: MAAS's own words on what matched nothing.
    NoMatch(String),
}

fn machine(v: Value, what: &str) -> Result<Machine> {
    serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{what}: MAAS answered a machine this cannot read: {e}"))
}

impl Api {
    /// Every machine the key may see; with `agent_name`, only those
    /// allocated under it.
    pub async fn machines(&self, agent_name: Option<&str>) -> Result<Vec<Machine>> {
        let query: Vec<(&str, &str)> = agent_name.map(|a| ("agent_name", a)).into_iter().collect();
        let v = self.get("machines/", &query).await?;
        serde_json::from_value(v).map_err(|e| anyhow::anyhow!("GET machines/: an answer this cannot read: {e}"))
    }

    pub async fn machine(&self, system_id: &str) -> Result<Machine> {
        let v = self.get(&format!("machines/{system_id}/"), &[]).await?;
        machine(v, &format!("GET machines/{system_id}/"))
    }

    pub async fn allocate(&self, c: &Constraints, agent_name: &str, comment: &str) -> Result<Allocation> {
        let mut form = c.form();
        form.push(("agent_name", agent_name.to_owned()));
        form.push(("comment", comment.to_owned()));
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = self.post("machines/", "allocate", &form).await?;
        if a.status == 409 {
            return Ok(Allocation::NoMatch(a.body.trim().to_owned()));
        }
        Ok(Allocation::Machine(Box::new(machine(json(&a, "POST machines/?op=allocate")?, "allocate")?)))
    }

    /// Deploys `system_id` with `user_data` (already base64) from image
    /// `osystem`/`distro_series`.
    pub async fn deploy(
        &self,
        system_id: &str,
        user_data_b64: &str,
        osystem: &str,
        distro_series: &str,
        comment: &str,
    ) -> Result<Machine> {
        let form = [
            ("user_data", user_data_b64),
            ("osystem", osystem),
            ("distro_series", distro_series),
            ("comment", comment),
        ];
        let what = format!("POST machines/{system_id}/?op=deploy");
        let a = self.post(&format!("machines/{system_id}/"), "deploy", &form).await?;
        machine(json(&a, &what)?, &what)
    }

    /// Releases `system_id` with `comment` in its event log; releasing a
    /// machine that is Ready or releasing already is a success in MAAS.
    pub async fn release(&self, system_id: &str, comment: &str) -> Result<Machine> {
        let what = format!("POST machines/{system_id}/?op=release");
        let a = self.post(&format!("machines/{system_id}/"), "release", &[("comment", comment)]).await?;
        if a.status == 404 {
            bail!("{what}: MAAS has no machine {system_id} ({})", a.brief());
        }
        machine(json(&a, &what)?, &what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(cpu: u32, mem: u64, storage_mb: f64, tags: &[&str]) -> Machine {
        serde_json::from_value(serde_json::json!({
            "system_id": "abc123", "hostname": "node1", "status": 4, "cpu_count": cpu, "memory": mem,
            "storage": storage_mb, "zone": {"name": "default"}, "pool": {"name": "pcg"}, "tag_names": tags,
        }))
        .unwrap()
    }

    #[test]
    fn a_machine_matches_or_says_why_not() {
        let c = Constraints {
            cpu_count: 4,
            mem_mib: 8192,
            disk_gib: 60,
            pool: Some("pcg".into()),
            tags: vec!["pcg".into()],
            ..Default::default()
        };
        assert_eq!(c.storage_gb(), 65);
        assert!(c.misses(&m(4, 8192, 65_000.0, &["pcg"])).is_empty());
        assert_eq!(
            c.misses(&m(2, 4096, 60_000.0, &[])),
            ["2 CPUs < 4", "4096 MiB memory < 8192", "60 GB storage < 65 GB (60 GiB)", "lacks tag(s) pcg"]
        );
        let form = c.form();
        assert!(form.contains(&("storage", "65".into())) && form.contains(&("tags", "pcg".into())), "{form:?}");
    }
}
