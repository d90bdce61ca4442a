//! node-image: builds reproducible MAAS custom images with node-init and
//! `overlays/` baked in, and uploads them to MAAS (DESIGN.md §image
//! pipeline).

mod build;
mod progress;
mod upload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Build(a) => match build::run(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("node-image: error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Upload(a) => match upload::run(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(upload::Failure::Usage(e)) => {
                eprintln!("node-image: error: {e}");
                ExitCode::from(2)
            }
            Err(upload::Failure::Failed(e)) => {
                eprintln!("node-image: error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
