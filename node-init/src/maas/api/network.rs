//! Subnets, IP ranges and IP addresses (canonical/maas,
//! `src/maasserver/api/subnets.py`, `ipranges.py`, `ip_addresses.py`).
//!
//! A VIP is safe when it lies in a MAAS subnet, outside that subnet's
//! dynamic ranges (MAAS's DHCP hands those out) and is not in the subnet's
//! `op=ip_addresses` list (anything MAAS has allocated, reserved or
//! discovered there). `ipaddresses/?op=reserve` with `ip` makes it a
//! `USER_RESERVED` address, which MAAS never gives to a machine; it answers
//! 404 (`StaticIPAddressUnavailable`: "The IP address ... is already in
//! use.") when it is taken. `?op=release` gives it back.

use std::net::IpAddr;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;

use super::{Api, json};

#[derive(Debug, Clone, Deserialize)]
pub struct Subnet {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    pub cidr: String,
}

impl Subnet {
    pub fn net(&self) -> Option<ipnet::IpNet> {
        self.cidr.parse().ok()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpRange {
    #[serde(rename = "type")]
    pub kind: String,
    pub start_ip: IpAddr,
    pub end_ip: IpAddr,
    pub subnet: SubnetRef,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubnetRef {
    pub id: u64,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.start_ip <= ip && ip <= self.end_ip
    }
}

/// An address MAAS knows in a subnet, and what holds it.
#[derive(Debug, Clone)]
pub struct UsedIp {
    pub ip: IpAddr,
    /// e.g. "node3 (machine abc123)", "vip-pcg (DNS record)", "user admin".
    pub holder: String,
}

/// What `reserve` came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserve {
    Reserved,
    /// MAAS's words on why not.
    Refused(String),
}

impl Api {
    pub async fn subnets(&self) -> Result<Vec<Subnet>> {
        let v = self.get("subnets/", &[]).await?;
        serde_json::from_value(v).map_err(|e| anyhow!("GET subnets/: an answer this cannot read: {e}"))
    }

    pub async fn ipranges(&self) -> Result<Vec<IpRange>> {
        let v = self.get("ipranges/", &[]).await?;
        serde_json::from_value(v).map_err(|e| anyhow!("GET ipranges/: an answer this cannot read: {e}"))
    }

    /// The addresses MAAS knows in subnet `id`.
    pub async fn subnet_ips(&self, id: u64) -> Result<Vec<UsedIp>> {
        let v = self.get(&format!("subnets/{id}/"), &[("op", "ip_addresses")]).await?;
        let list = v.as_array().with_context(|| format!("GET subnets/{id}/?op=ip_addresses: not a list"))?;
        Ok(list.iter().filter_map(used_ip).collect())
    }

    /// The addresses this key's user has reserved (`GET ipaddresses/`).
    pub async fn reserved(&self) -> Result<Vec<IpAddr>> {
        let v = self.get("ipaddresses/", &[]).await?;
        let list = v.as_array().context("GET ipaddresses/: not a list")?;
        Ok(list.iter().filter_map(|a| a.get("ip")?.as_str()?.parse().ok()).collect())
    }

    pub async fn reserve(&self, ip: IpAddr, hostname: &str) -> Result<Reserve> {
        let ip_text = ip.to_string();
        let a = self.post("ipaddresses/", "reserve", &[("ip", &ip_text), ("hostname", hostname)]).await?;
        if matches!(a.status, 400 | 403 | 404 | 409) {
            return Ok(Reserve::Refused(a.brief()));
        }
        json(&a, "POST ipaddresses/?op=reserve")?;
        Ok(Reserve::Reserved)
    }

    /// Gives back a reserved `ip`; one that MAAS no longer has reserved
    /// for this user (released already) is not an error.
    pub async fn release_ip(&self, ip: IpAddr) -> Result<bool> {
        let a = self.post("ipaddresses/", "release", &[("ip", &ip.to_string())]).await?;
        if a.status == 400 && a.body.contains("does not exist") {
            return Ok(false);
        }
        if !a.success() {
            bail!("POST ipaddresses/?op=release {ip}: {}", a.brief());
        }
        Ok(true)
    }
}

/// One entry of `render_json_for_related_ips`.
fn used_ip(v: &Value) -> Option<UsedIp> {
    let ip = v.get("ip")?.as_str()?.parse().ok()?;
    let s = |p: &str| v.pointer(p).and_then(Value::as_str);
    let holder = if let Some(host) = s("/node_summary/hostname") {
        format!("{host} ({})", s("/node_summary/system_id").unwrap_or("a node"))
    } else if let Some(name) = v.pointer("/dns_records/0/fqdn").and_then(Value::as_str) {
        format!("DNS record {name}")
    } else if let Some(user) = s("/user") {
        format!("reserved by {user}")
    } else {
        "MAAS".to_owned()
    };
    Some(UsedIp { ip, holder })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_of_an_address_is_named() {
        let v = serde_json::json!([
            {"ip": "10.0.0.5", "alloc_type": 1, "node_summary": {"system_id": "abc", "hostname": "node3"}},
            {"ip": "10.0.0.6", "alloc_type": 4, "user": "admin"},
            {"ip": "10.0.0.7", "alloc_type": 6},
        ]);
        let got: Vec<String> = v.as_array().unwrap().iter().filter_map(used_ip).map(|u| u.holder).collect();
        assert_eq!(got, ["node3 (abc)", "reserved by admin", "MAAS"]);
    }
}
