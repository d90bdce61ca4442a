//! `node-init down`: releases every machine `DIR/state.json` names, with a
//! comment in each machine's MAAS event log, and the VIP unless
//! `--keep-vip`. It touches nothing else: only the system ids the state
//! lists, only a VIP `up` reserved, and never the secrets or the state
//! (which records the release, so a rerun finds nothing left to do).

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::record::{self, Vip};
use super::{MaasArgs, UsageError};
use crate::maas::api::machines::status;

#[derive(Debug, clap::Args)]
/// Release what `up` made: every machine its state names (with a comment
/// in MAAS's log) and the VIP. Nothing else is touched.
pub struct Args {
    #[command(flatten)]
    maas: MaasArgs,
    /// The --state DIR of `up`.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Leave the VIP reserved in MAAS (for a cluster brought up again).
    #[arg(long)]
    keep_vip: bool,
}

pub async fn run(a: Args) -> Result<u8> {
    let api = a.maas.api()?;
    let Some(mut rec) = record::load(&a.state)? else {
        bail!(UsageError(format!(
            "--state {}: no state.json there; `down` releases only what an `up` with that --state recorded",
            a.state.display()
        )));
    };
    if rec.maas != a.maas.maas {
        bail!(UsageError(format!(
            "--state {}: its cluster is on --maas {}, not {}",
            a.state.display(),
            rec.maas,
            a.maas.maas
        )));
    }
    let comment = format!("node-init down: releasing cluster {} (agent_name {})", rec.cluster, rec.agent_name());
    let mut failed = Vec::new();
    // Only machines that still carry the cluster's agent_name are
    // released: one released behind its back may be someone else's now.
    let ours = super::nodes::ours(&api, &rec).await?;
    for i in 0..rec.machines.len() {
        let id = rec.machines[i].system_id.clone();
        if rec.machines[i].released_at.is_some() {
            continue;
        }
        if !ours.contains(&id) {
            let m = api.machine(&id).await?;
            if matches!(m.status, status::READY | status::RELEASING) {
                rec.machines[i].released_at = Some(crate::state::now_rfc3339());
                continue;
            }
            failed.push(format!(
                "{} ({id}) no longer carries this cluster's agent_name (MAAS: {}): left alone; release it by hand if \
                 it is still this cluster's",
                rec.machines[i].hostname, m.status_name
            ));
            continue;
        }
        match api.release(&id, &comment).await {
            Ok(m) => {
                eprintln!("node-init: down: {} ({id}): {}", rec.machines[i].hostname, m.status_name);
                rec.machines[i].maas_status = m.status_name;
                rec.machines[i].released_at = Some(crate::state::now_rfc3339());
                record::save(&a.state, &rec)?;
            }
            Err(e) => failed.push(format!("{} ({id}): {e:#}", rec.machines[i].hostname)),
        }
    }
    let vip: std::net::IpAddr = rec.vip.parse().map_err(|_| UsageError(format!("state.json: vip {:?}", rec.vip)))?;
    match rec.vip_state {
        Vip::Reserved | Vip::Reserving | Vip::Kept if !a.keep_vip => match api.release_ip(vip).await {
            Ok(held) => {
                eprintln!("node-init: down: VIP {vip}: {}", if held { "released" } else { "was not reserved" });
                rec.vip_state = Vip::Released;
            }
            Err(e) => failed.push(format!("VIP {vip}: {e:#}")),
        },
        Vip::Reserved | Vip::Reserving if a.keep_vip => {
            eprintln!("node-init: down: VIP {vip}: kept reserved (--keep-vip)");
            rec.vip_state = Vip::Kept;
        }
        _ => {}
    }
    if !failed.is_empty() {
        record::save(&a.state, &rec)?;
        bail!("could not release everything (run `down` again):\n  - {}", failed.join("\n  - "));
    }
    rec.down = Some(crate::state::now_rfc3339());
    rec.step("down", comment);
    record::save(&a.state, &rec)?;
    Ok(crate::cli::exit::OK)
}
