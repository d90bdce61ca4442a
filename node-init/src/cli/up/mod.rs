//! `node-init up`: a whole 1- or 3-node cluster from MAAS, and `node-init
//! down` (in `down.rs`) to take it away.
//!
//! Everything the operator gave is checked first (exit 2 naming the flag,
//! key or file; nothing changed), then the MAAS side (`preflight`); only
//! then does `up` change anything, one step at a time, each recorded in
//! `DIR/state.json` (`record`) before the next: reserve the VIP, write the
//! secrets, allocate (`nodes`), deploy the init node, then the joins, and
//! watch (`watch`) until node-init on every machine reported its end. It
//! finishes with a table or JSON (`report`). A rerun continues from the
//! state; a failure leaves the machines for inspection and says how on.

pub mod down;
mod nodes;
mod plan;
mod preflight;
mod record;
mod report;
mod watch;

use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use self::record::{Outcome, Record, Vip};
use super::secrets::Secrets;
use super::{Format, UsageError};
use crate::maas::api::Api;
use crate::maas::api::machines::status;
use crate::maas::api::network::Reserve;
use crate::maas::oauth::ApiKey;
use crate::secret::Secret;

/// The step recorded before the secrets are written into DIR/secrets.
const MINTING: &str = "secrets-minting";

/// How long one exchange with MAAS may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn secret(s: &str) -> Result<Secret<String>, String> {
    Ok(Secret::new(s.to_owned()))
}

/// The region and the key, shared by `up` and `down`.
#[derive(Debug, clap::Args)]
pub struct MaasArgs {
    /// The MAAS URL, e.g. http://maas.example:5240/MAAS.
    #[arg(long, value_name = "URL")]
    maas: String,
    /// The MAAS API key, consumer:token:secret (`maas apikey --username
    /// U`); never printed. Prefer the environment: arguments show in ps.
    #[arg(long, env = "MAAS_API_KEY", hide_env_values = true, value_name = "KEY", value_parser = secret)]
    api_key: Secret<String>,
}

impl MaasArgs {
    fn api(&self) -> Result<Api> {
        let key = ApiKey::parse(self.api_key.expose()).map_err(|e| UsageError(format!("--api-key: {e}")))?;
        Ok(Api::new(&self.maas, key, REQUEST_TIMEOUT).map_err(|e| UsageError(format!("--maas: {e}")))?)
    }
}

fn nodes_arg(s: &str) -> Result<usize, String> {
    match s {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err("a PCG has 1 node or 3 (etcd needs an odd count)".into()),
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| e.to_string())
        .and_then(|d| if d.is_zero() { Err("must be more than zero".into()) } else { Ok(d) })
}

#[derive(Debug, clap::Args)]
/// Bring a 1- or 3-node cluster up from MAAS: check MAAS, reserve the VIP,
/// mint the secrets, allocate, deploy (init first) and follow node-init
/// on every machine. Resumable: run it again with the same --state.
pub struct Args {
    #[command(flatten)]
    maas: MaasArgs,
    /// The cluster's node-init config, shared by every node
    /// (kubernetes.endpoint is the VIP:port).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where `up` keeps state.json (and the secrets it mints).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// How many nodes: 1, or 3 for HA.
    #[arg(long, default_value = "1", value_parser = nodes_arg)]
    nodes: usize,
    /// The custom image to deploy, as uploaded (`node-image upload`).
    #[arg(long, value_name = "custom/NAME", default_value = "custom/pcg")]
    image: String,
    /// Only machines in this zone.
    #[arg(long)]
    zone: Option<String>,
    /// Only machines in this resource pool.
    #[arg(long)]
    pool: Option<String>,
    /// Only machines with all these tags.
    #[arg(long, value_delimiter = ',', value_name = "TAG,..")]
    tags: Vec<String>,
    /// Existing secrets (`node-init secrets --out DIR`); default: minted
    /// into DIR/secrets.
    #[arg(long, value_name = "DIR")]
    secrets: Option<PathBuf>,
    /// How long this run may take, all waits included.
    #[arg(long, default_value = "60m", value_parser = duration_arg)]
    timeout: Duration,
    /// How often each machine is polled (jittered by a quarter).
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    interval: Duration,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

pub async fn run(a: Args) -> Result<u8> {
    let deadline = tokio::time::Instant::now() + a.timeout;
    let existing = record::load(&a.state)?;
    let p = plan::plan(&a, existing.as_ref())?;
    if let Some(rec) = &existing {
        plan::same_cluster(&a, rec, p.vip)?;
    }
    let mut rec = existing.unwrap_or_else(|| Record {
        cluster: hex::encode(crate::pki::random_bytes::<4>().unwrap_or_default()),
        maas: a.maas.maas.clone(),
        nodes: a.nodes,
        image: a.image.clone(),
        vip: p.vip.to_string(),
        vip_state: Vip::Free,
        vip_hostname: String::new(),
        secrets: p.secrets_dir.clone(),
        secrets_minted: false,
        created: crate::state::now_rfc3339(),
        allocations_sent: 0,
        machines: Vec::new(),
        steps: Vec::new(),
        down: None,
    });
    rec.vip_hostname = format!("pcg-vip-{}", rec.cluster);
    let dir = a.state.clone();
    let save = move |r: &Record| record::save(&dir, r);
    let api = &p.api;

    // What an earlier run may have left without recording.
    if rec.vip_state == Vip::Reserving {
        rec.vip_state = if api.reserved().await?.contains(&p.vip) { Vip::Reserved } else { Vip::Free };
    }
    nodes::adopt(api, &mut rec).await?;

    // A machine that no longer carries the cluster's agent_name was
    // released behind its back, perhaps to someone else: it is not touched.
    let ours = nodes::ours(api, &rec).await?;
    if let Some(n) = rec.machines.iter().find(|n| !ours.contains(&n.system_id)) {
        bail!(
            "{} ({}) is named in {}/state.json but no longer allocated to this cluster in MAAS (agent_name {}); up \
             leaves it alone: release the rest with `node-init down`, and bring a new cluster up with a new --state",
            n.hostname,
            n.system_id,
            a.state.display(),
            rec.agent_name()
        );
    }

    let needs = preflight::Needs {
        image: &a.image,
        constraints: &p.constraints,
        machines: rec.nodes - rec.machines.len(),
        vip: p.vip,
        vip_ours: rec.vip_state == Vip::Reserved,
        pod_cidr: p.pod_cidr,
        service_cidr: p.service_cidr,
    };
    preflight::check(api, &needs).await?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&a.state)
        .with_context(|| format!("creating {}", a.state.display()))?;
    if !rec.done("checked") {
        rec.step("checked", "the key, the image, the machines, the VIP and the CIDRs");
    }
    save(&rec)?;

    let result = converge(&a, &p, &mut rec, deadline, &save).await;
    if result.is_err() {
        // Something was changed already: say how on, as a failure does.
        eprintln!("node-init: up: {}", report::ways_on(&a.maas.maas, &a.state));
    }
    result
}

/// Every step after the checks, from where the state says.
async fn converge(
    a: &Args,
    p: &plan::Plan,
    rec: &mut Record,
    deadline: tokio::time::Instant,
    save: &dyn Fn(&Record) -> Result<()>,
) -> Result<u8> {
    let api = &p.api;
    reserve_vip(api, rec, p.vip, save).await?;
    if p.mint {
        rec.step(MINTING, p.secrets_dir.display().to_string());
        save(rec)?;
        write_secrets(&p.secrets, &p.secrets_dir)?;
        rec.secrets_minted = true;
        rec.step("secrets", p.secrets_dir.display().to_string());
        save(rec)?;
    }
    nodes::allocate(api, rec, &p.constraints, save).await?;

    // A rerun looks again at every node: a machine whose deployment
    // failed is deployed again, node-init's events are read afresh.
    for n in &mut rec.machines {
        let m = api.machine(&n.system_id).await?;
        n.maas_status = m.status_name.clone();
        if m.status == status::FAILED_DEPLOYMENT || m.status == status::ALLOCATED {
            n.deploy_sent = None;
        }
        (n.outcome, n.error, n.last_event, n.finished_at) = (Outcome::Pending, None, None, None);
    }
    let deployer = nodes::Deployer { image: &a.image, cluster: &p.cluster, secrets: &p.secrets, origin: &p.origin };
    if rec.machines[0].deploy_sent.is_none() {
        deployer.deploy(api, rec, 0).await?;
        save(rec)?;
    }
    let end = watch::watch(api, rec, &deployer, a.interval, deadline, save).await?;
    let ok = end == watch::End::Settled && rec.machines.iter().all(|n| n.outcome == Outcome::Done);
    if ok && !rec.done("up") {
        rec.step("up", "every node reported node-init done");
    }
    save(rec)?;
    finish(a, rec, ok, end == watch::End::TimedOut)
}

async fn reserve_vip(api: &Api, rec: &mut Record, vip: IpAddr, save: &dyn Fn(&Record) -> Result<()>) -> Result<()> {
    if rec.vip_state == Vip::Reserved {
        return Ok(());
    }
    rec.vip_state = Vip::Reserving;
    save(rec)?;
    match api.reserve(vip, &rec.vip_hostname).await {
        Ok(Reserve::Reserved) => {
            rec.vip_state = Vip::Reserved;
            rec.step("vip", format!("{vip} reserved as {}", rec.vip_hostname));
            tracing::info!(%vip, hostname = rec.vip_hostname, "VIP reserved");
            save(rec)
        }
        Ok(Reserve::Refused(why)) => {
            rec.vip_state = Vip::Free;
            save(rec)?;
            bail!("kubernetes.endpoint: MAAS would not reserve the VIP {vip}: {why}")
        }
        // No answer: MAAS may have done it; the next run asks.
        Err(e) => Err(e.context(format!("reserving the VIP {vip}"))),
    }
}

/// The secrets minted for this cluster, written whole or not at all: into
/// a directory beside DIR/secrets, renamed over it.
fn write_secrets(s: &Secrets, dir: &Path) -> Result<()> {
    let tmp = dir.with_file_name(".secrets.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    if dir.exists() {
        // Left by a run killed after the rename but before its record:
        // this cluster's, never used by a machine yet.
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    s.write(&tmp)?;
    std::fs::rename(&tmp, dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).ok();
    }
    Ok(())
}

fn finish(a: &Args, rec: &Record, ok: bool, timed_out: bool) -> Result<u8> {
    let text = match a.output {
        Format::Json => serde_json::to_string_pretty(&report::json(rec, ok, timed_out))? + "\n",
        Format::Table => report::table(rec),
    };
    super::print(&text)?;
    if ok {
        return Ok(super::exit::OK);
    }
    for line in report::failures(rec) {
        eprintln!("node-init: up: {line}");
    }
    if timed_out {
        let waiting: Vec<String> = rec
            .machines
            .iter()
            .filter(|n| n.outcome == Outcome::Pending)
            .map(|n| format!("{} ({}) at {}", n.hostname, n.maas_status, n.stage))
            .collect();
        eprintln!(
            "node-init: up: --timeout {} passed while waiting for {}",
            humantime::format_duration(a.timeout),
            waiting.join(", ")
        );
    }
    eprintln!("node-init: up: {}", report::ways_on(&a.maas.maas, &a.state));
    Ok(super::exit::FAILED)
}
