//! node-image: builds reproducible MAAS custom images with node-init and
//! `overlays/` baked in, and uploads them to MAAS (DESIGN.md §image
//! pipeline). `main` parses, dispatches, prints the error chain once and
//! maps it to an exit code: bad usage ([`UsageError`] anywhere in the
//! chain) is 2, any other failure 1, as in node-init.

mod build;
mod help;
mod progress;
mod upload;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "node-image", version, max_term_width = 80)]
/// Build MAAS custom images with node-init baked in.
///
/// Exit codes: 0 done, 1 failed (no output file is left behind), 2 bad
/// usage.
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Build(build::Args),
    Upload(upload::Args),
    Completions(help::CompletionsArgs),
    Man(help::ManArgs),
}

/// Bad usage that clap cannot see (a malformed API key, a URL that is not
/// MAAS's): exit 2, nothing was read or sent. node-init's own type, so both
/// binaries share one convention; return it wrapped in anyhow, and context
/// added on the way up does not change the exit code.
pub use node_init::error::UsageError;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Build(a) => build::run(&a),
        Command::Upload(a) => upload::run(&a),
        Command::Completions(a) => help::print(&help::completions(&a, Cli::command())),
        Command::Man(_) => help::man(Cli::command()).and_then(|page| help::print(&page)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node-image: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for bad usage anywhere in the chain, else 1: node-init's rule.
fn exit_code(e: &anyhow::Error) -> u8 {
    if node_init::error::is_bad_input(e) { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_anywhere_in_the_chain_exits_2_and_anything_else_1() {
        let usage = anyhow::Error::new(UsageError("--name \"x\": expected custom/NAME".into()));
        assert_eq!(exit_code(&usage), 2);
        assert_eq!(format!("{usage:#}"), "--name \"x\": expected custom/NAME");
        assert_eq!(exit_code(&usage.context("uploading")), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("HTTP 401 Unauthorized")), 1);
        let io = Err::<(), _>(std::io::Error::other("disk full")).context("writing x").unwrap_err();
        assert_eq!(exit_code(&io), 1);
    }
}
