//! `node-init run`: the first-boot pipeline.

use std::path::PathBuf;

use anyhow::Result;

use crate::config;
use crate::maas::events::Reporter;
use crate::node::Node;
use crate::pipeline::{self, Options};
use crate::runner::HostRunner;
use crate::stages::{self, Context};

#[derive(Debug, clap::Args)]
/// Run the first-boot stages in order, resuming where a previous run
/// stopped.
pub struct Args {
    /// Config file (default /etc/node-init/config.yaml, else the node_init
    /// key of cloud-init user data).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Act on a mounted image or chroot: every path under DIR, commands
    /// through chroot, never a reboot of the host.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Run only these stages (comma-separated or repeated).
    #[arg(long, value_name = "STAGE", value_delimiter = ',')]
    only: Vec<String>,
    /// Leave out these stages.
    #[arg(long, value_name = "STAGE", value_delimiter = ',')]
    skip: Vec<String>,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Never reboot; exit 3 when a reboot is required.
    #[arg(long)]
    no_reboot: bool,
}

pub async fn run(a: Args) -> Result<u8> {
    let root = super::root_arg(a.root.as_deref())?;
    let loaded = config::load(&root, a.config.as_deref())?;
    tracing::info!(origin = %loaded.origin(), "configuration loaded");
    let node = Node::gather(&root, &loaded.config)?;
    if let Err(why) = &node.fqdn {
        tracing::warn!(error = %why, "no FQDN");
    }
    let runner = HostRunner::new((!root.is_host()).then(|| root.base().to_owned()));
    let cx = Context::new(&root, &node, &loaded.config, &runner, a.dry_run);
    let opts = Options { only: a.only, skip: a.skip, no_reboot: a.no_reboot };
    let reporter = if a.dry_run { None } else { reporter(&root, &node, &loaded.config) };
    let end = pipeline::run_reported(stages::TABLE, &cx, &opts, reporter.as_ref()).await?;
    own_cpu();
    if a.dry_run {
        let plan = cx.plan();
        let text = if plan.is_empty() { "nothing would change\n".to_owned() } else { plan.join("\n") + "\n" };
        super::print(&text)?;
    }
    Ok(super::end_code(end))
}

/// Logs node-init's own CPU time in this run: its threads only, not the
/// commands it ran (apt, dpkg, kubeadm), which the unit's accounting
/// counts with it.
fn own_cpu() {
    use nix::sys::resource::{UsageWho, getrusage};
    if let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) {
        let ms = |t: nix::sys::time::TimeVal| t.tv_sec() * 1000 + t.tv_usec() / 1000;
        tracing::info!(user_ms = ms(u.user_time()), system_ms = ms(u.system_time()), "node-init's own CPU time");
    }
}

/// The MAAS reporter, when curtin left the node its reporting settings. A
/// file that cannot be read is logged and the run goes on unreported:
/// reporting never stops a first boot.
fn reporter(root: &crate::root::Root, node: &Node, config: &config::Config) -> Option<Reporter> {
    match crate::maas::reporting(root) {
        Ok(Some(endpoint)) => {
            tracing::info!(endpoint = %endpoint.url, "reporting to MAAS");
            let client = crate::maas::http::Client::new(root, &node.maas_servers);
            Some(Reporter::new(endpoint, client, config, super::status::as_json))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "not reporting to MAAS");
            None
        }
    }
}
