//! The command line: one file per subcommand, each with its args struct
//! and `run()`. `main` parses, dispatches, prints the error chain once and
//! maps errors to exit codes: a rejected config or bad usage is 2, any
//! other failure 1.

mod cert_hash;
mod completions;
mod config;
mod join_material;
mod run;
mod secrets;
mod status;
mod up;
mod userdata;
mod verify;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub(crate) use crate::error::UsageError;
use crate::logging;
use crate::pipeline::End;

/// Exit codes shared by every subcommand (DESIGN.md §Exit codes): the
/// CLI's words for what the library returned.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const BAD_CONFIG: u8 = 2;
    pub const REBOOT_REQUIRED: u8 = 3;
}

/// The exit code of a pipeline's end.
pub fn end_code(end: End) -> u8 {
    match end {
        End::Done => exit::OK,
        End::Failed => exit::FAILED,
        End::RebootRequired => exit::REBOOT_REQUIRED,
    }
}

/// How a subcommand prints its result: for people, or as JSON on stdout.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "node-init", version, max_term_width = 80)]
/// First-boot provisioning for MAAS-deployed kubeadm nodes.
///
/// Exit codes: 0 done or passed, 1 a stage or check failed, 2 bad config or
/// usage (nothing was changed), 3 a reboot is required and was not done.
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::Args),
    Status(status::Args),
    Verify(verify::Args),
    CertHash(cert_hash::Args),
    JoinMaterial(join_material::Args),
    Secrets(secrets::Args),
    Userdata(userdata::Args),
    Up(up::Args),
    Down(up::down::Args),
    Config(config::Args),
    Completions(completions::Args),
    Man(completions::ManArgs),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::BAD_CONFIG } else { exit::OK });
        }
    };
    logging::init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("node-init: error: starting the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(a) => run::run(a).await,
            Command::Status(a) => status::run(a),
            Command::Verify(a) => verify::run(a).await,
            Command::CertHash(a) => cert_hash::run(a),
            Command::JoinMaterial(a) => join_material::run(a).await,
            Command::Secrets(a) => secrets::run(a),
            Command::Userdata(a) => userdata::run(a),
            Command::Up(a) => up::run(a).await,
            Command::Down(a) => up::down::run(a).await,
            Command::Config(a) => config::run(a),
            Command::Completions(a) => completions::run(a),
            Command::Man(a) => completions::man(a),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}node-init: error: {e:#}", logging::prefix(&tracing::Level::ERROR));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for a rejected config or bad usage anywhere in the chain, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if crate::error::is_bad_input(e) { exit::BAD_CONFIG } else { exit::FAILED }
}

/// Writes machine or user output to stdout. A closed pipe (`| head`) is
/// not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The root given with `--root`, or the running system.
fn root_arg(dir: Option<&std::path::Path>) -> anyhow::Result<crate::root::Root> {
    match dir {
        None => Ok(crate::root::Root::host()),
        Some(d) => crate::root::Root::new(d).map_err(|e| UsageError(format!("--root: {e:#}")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_fits_80_columns() {
        let mut cmd = Cli::command();
        let mut texts = vec![cmd.render_long_help().to_string()];
        for sub in cmd.get_subcommands_mut() {
            texts.push(sub.render_long_help().to_string());
        }
        for line in texts.iter().flat_map(|t| t.lines()) {
            assert!(line.chars().count() <= 80, "too wide: {line:?}");
        }
    }
}
