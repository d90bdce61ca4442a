//! Machines for the cluster: allocated under the cluster's `agent_name`,
//! each recorded at once; deployed with its role's user data from the
//! custom image, as Cluster API's MAAS provider deploys (`osystem`
//! `custom`, `distro_series` the image's NAME, `user_data` base64).

use anyhow::{Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use super::record::{Node, Record};
use crate::cli::secrets::Secrets;
use crate::cli::userdata;
use crate::config::Role;
use crate::maas::api::Api;
use crate::maas::api::machines::{Allocation, Constraints, Machine, status};

/// The role of the `i`-th machine: the first inits, the others join as
/// control-plane nodes (a PCG has one or three control-plane nodes).
pub fn role(i: usize) -> Role {
    if i == 0 { Role::Init } else { Role::ControlPlane }
}

pub fn node(m: &Machine, role: Role) -> Node {
    Node {
        system_id: m.system_id.clone(),
        hostname: m.hostname.clone(),
        fqdn: m.fqdn.clone(),
        address: m.ip_addresses.first().cloned(),
        role: role.as_str().to_owned(),
        allocated_at: crate::state::now_rfc3339(),
        deploy_sent: None,
        maas_status: m.status_name.clone(),
        stage: "-".into(),
        outcome: Default::default(),
        error: None,
        last_event: None,
        finished_at: None,
        released_at: None,
    }
}

/// Machines MAAS holds under this cluster's `agent_name` that the state
/// does not list: allocated by a run killed before it could record them.
pub async fn adopt(api: &Api, rec: &mut Record) -> Result<()> {
    if rec.allocations_sent <= rec.machines.len() {
        return Ok(());
    }
    for m in api.machines(Some(&rec.agent_name())).await? {
        if rec.machines.len() < rec.nodes && !rec.machines.iter().any(|n| n.system_id == m.system_id) {
            tracing::info!(system_id = m.system_id, "adopting a machine allocated under this cluster's agent_name");
            let n = node(&m, role(rec.machines.len()));
            rec.machines.push(n);
        }
    }
    rec.allocations_sent = rec.machines.len();
    Ok(())
}

/// The system ids MAAS holds under this cluster's `agent_name`.
pub async fn ours(api: &Api, rec: &Record) -> Result<std::collections::BTreeSet<String>> {
    Ok(api.machines(Some(&rec.agent_name())).await?.into_iter().map(|m| m.system_id).collect())
}

/// Allocates until the cluster has its machines, saving after each.
pub async fn allocate(
    api: &Api,
    rec: &mut Record,
    c: &Constraints,
    save: &dyn Fn(&Record) -> Result<()>,
) -> Result<()> {
    while rec.machines.len() < rec.nodes {
        let i = rec.machines.len();
        rec.allocations_sent += 1;
        save(rec)?;
        let comment = format!("node-init up: cluster {}, {} node", rec.cluster, role(i).as_str());
        match api.allocate(c, &rec.agent_name(), &comment).await? {
            Allocation::Machine(m) => {
                tracing::info!(system_id = m.system_id, hostname = m.hostname, role = role(i).as_str(), "allocated");
                rec.machines.push(node(&m, role(i)));
                save(rec)?;
            }
            Allocation::NoMatch(why) => {
                rec.allocations_sent -= 1;
                save(rec)?;
                bail!(
                    "MAAS allocated {i} of {} machines, then none matched: {why}. What was allocated stays \
                     allocated to this cluster",
                    rec.nodes
                );
            }
        }
    }
    rec.step("allocated", rec.machines.iter().map(|m| m.system_id.as_str()).collect::<Vec<_>>().join(","));
    save(rec)
}

/// The other nodes' addresses, as far as MAAS has assigned them: a
/// machine with a static link has its address from the start, one with
/// MAAS's default AUTO link only once its deployment starts. Those without
/// one yet are left out, and named.
fn peers(rec: &Record, me: &Node) -> Vec<Value> {
    let mut out = Vec::new();
    for n in rec.machines.iter().filter(|n| n.system_id != me.system_id) {
        match &n.address {
            Some(a) => out.push(json!(a)),
            None => eprintln!(
                "node-init: up: note: {} ({}) has no address in MAAS yet (an AUTO link gets one only when its \
                 deployment starts): {}'s kubernetes.peers leaves it out; give the machines static addresses in \
                 MAAS for complete peers",
                n.hostname, n.system_id, me.hostname
            ),
        }
    }
    out
}

/// The user data of `node`: the cluster's config with its role, the
/// secrets and its peers, validated as the node will, as `#cloud-config`.
pub fn user_data(cluster: &Value, rec: &Record, node: &Node, secrets: &Secrets, origin: &str) -> Result<String> {
    let mut doc = cluster.clone();
    if let Some(k) = doc.get_mut("kubernetes").and_then(Value::as_object_mut) {
        k.insert("peers".into(), Value::Array(peers(rec, node)));
    }
    let role = if node.role == "init" { Role::Init } else { Role::ControlPlane };
    let config = userdata::node_config(doc, role, Some(secrets), origin)?;
    userdata::render(&config)
}

/// What every deploy of this cluster shares.
pub struct Deployer<'a> {
    pub image: &'a str,
    /// The cluster's config as the operator wrote it.
    pub cluster: &'a Value,
    pub secrets: &'a Secrets,
    /// Where the cluster's config came from, for messages.
    pub origin: &'a str,
}

impl Deployer<'_> {
    /// Sends the deploy of machine `i` unless MAAS is deploying it
    /// already (a run killed after sending it); records it either way.
    pub async fn deploy(&self, api: &Api, rec: &mut Record, i: usize) -> Result<()> {
        let ud = user_data(self.cluster, rec, &rec.machines[i], self.secrets, self.origin)?;
        let cluster = rec.cluster.clone();
        let node = &mut rec.machines[i];
        let m = api.machine(&node.system_id).await?;
        node.maas_status = m.status_name.clone();
        if matches!(m.status, status::DEPLOYING | status::DEPLOYED) {
            node.deploy_sent.get_or_insert_with(crate::state::now_rfc3339);
            return Ok(());
        }
        let series = self.image.strip_prefix("custom/").unwrap_or(self.image);
        let b64 = base64::engine::general_purpose::STANDARD.encode(ud);
        let comment = format!("node-init up: cluster {cluster}, {} node", node.role);
        let m = api.deploy(&node.system_id, &b64, "custom", series, &comment).await?;
        tracing::info!(system_id = node.system_id, role = node.role, image = self.image, "deploy sent");
        node.maas_status = m.status_name;
        node.deploy_sent = Some(crate::state::now_rfc3339());
        Ok(())
    }
}
