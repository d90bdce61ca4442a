//! `node-init completions SHELL` and `node-init man`: shell completion
//! scripts and the man page, rendered from the same clap definition the
//! binary parses with, so they never drift from the real flags.

use clap::CommandFactory;

use super::{Cli, exit, print};

#[derive(Debug, clap::Args)]
/// Print a completion script for SHELL (bash, zsh, fish, elvish,
/// powershell) to stdout.
pub struct Args {
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "node-init", &mut out);
    print(&String::from_utf8_lossy(&out))?;
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
/// Print the man page (troff, section 8) to stdout: `node-init man | man -l -`.
pub struct ManArgs {}

pub fn man(_: ManArgs) -> anyhow::Result<u8> {
    print(&render_man()?)?;
    Ok(exit::OK)
}

/// The man page: the top-level page, then each subcommand's as a section.
pub fn render_man() -> anyhow::Result<String> {
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).section("8").render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("node-init-{}", sub.get_name());
        clap_mangen::Man::new(sub.clone().name(name)).section("8").render(&mut out)?;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bash() -> String {
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "node-init", &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The image carries both through `overlays/`; they must be what this
    /// binary renders (`NODE_INIT_UPDATE_GOLDEN=1` rewrites them).
    #[test]
    fn the_overlays_carry_this_binarys_completion_and_man_page() {
        let overlays = concat!(env!("CARGO_MANIFEST_DIR"), "/../overlays/");
        for (path, text) in [
            ("usr/share/bash-completion/completions/node-init", bash()),
            ("usr/share/man/man8/node-init.8", render_man().unwrap()),
        ] {
            let file = format!("{overlays}{path}");
            if std::env::var_os("NODE_INIT_UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(std::path::Path::new(&file).parent().unwrap()).unwrap();
                std::fs::write(&file, &text).unwrap();
            }
            let have = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(have == text, "{path} is stale: NODE_INIT_UPDATE_GOLDEN=1 cargo test -p node-init rewrites it");
        }
    }

    #[test]
    fn bash_completion_knows_every_subcommand() {
        let text = bash();
        for sub in ["run", "verify", "status", "userdata", "secrets", "cert-hash", "completions", "man"] {
            assert!(text.contains(sub), "{sub} missing from the bash completion");
        }
        assert!(text.contains("--ignore") || text.contains("--only"), "flags of run are completed");
    }

    #[test]
    fn the_man_page_is_troff_with_every_subcommand() {
        let page = render_man().unwrap();
        assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{}", &page[..40]);
        assert!(page.contains(".TH node-init 8"), "no title header");
        for sub in ["node-init-run", "node-init-verify", "node-init-status"] {
            assert!(page.contains(sub), "{sub} has no section");
        }
    }
}
