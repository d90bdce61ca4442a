//! `node-image completions SHELL` and `node-image man`: the command line
//! described for a shell's completion and for man(1), both rendered from the
//! same clap definition the program parses with, so they cannot drift.
//!
//! Both write to stdout (`node-image man > node-image.1`); a reader that
//! closes the pipe early (`| head`) is not an error.

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
/// Print a completion script for a shell.
///
/// E.g. `node-image completions bash > /etc/bash_completion.d/node-image`.
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, clap::Args)]
/// Print the manual page (troff), e.g. `node-image man > node-image.1`.
pub struct ManArgs {}

/// The completion script for `cli` in `shell`.
pub fn completions(a: &CompletionsArgs, mut cli: clap::Command) -> Vec<u8> {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    let name = cli.get_name().to_owned();
    clap_complete::generate(shell, &mut cli, name, &mut out);
    out
}

/// The manual page of `cli`: `.TH` first, then a section for the
/// program and one for each subcommand, its synopsis, description and
/// options as subsections.
pub fn man(cli: clap::Command) -> Result<Vec<u8>> {
    let cli = cli.disable_help_subcommand(true);
    let mut page = Vec::new();
    clap_mangen::Man::new(cli.clone()).render(&mut page).context("rendering the manual page")?;
    let page = String::from_utf8_lossy(&page).into_owned();
    // clap_mangen opens with the definition of the quote string `Aq`; it
    // may as well follow the title, so the page starts as man(7) says.
    let (preamble, rest): (Vec<&str>, Vec<&str>) = page.lines().partition(|l| is_preamble(l));
    let (title, rest) = rest.split_first().context("rendering the manual page: no title")?;
    let mut out = [*title].into_iter().chain(preamble).chain(rest.iter().copied()).collect::<Vec<_>>().join("\n");
    out.push('\n');
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{} {}", cli.get_name(), sub.get_name());
        let man = clap_mangen::Man::new(sub.clone().bin_name(&name));
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part).context("rendering the manual page")?;
        man.render_description_section(&mut part).context("rendering the manual page")?;
        man.render_options_section(&mut part).context("rendering the manual page")?;
        out.push_str(&format!(".SH \"{}\"\n", name.to_uppercase()));
        for line in String::from_utf8_lossy(&part).lines().filter(|l| !is_preamble(l)) {
            match line.strip_prefix(".SH ") {
                Some(heading) => out.push_str(&format!(".SS {heading}\n")),
                None => out.push_str(&format!("{line}\n")),
            }
        }
    }
    Ok(out.into_bytes())
}

fn is_preamble(line: &str) -> bool {
    line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq")
}

/// Writes `bytes` to stdout; a closed pipe ends the output quietly.
pub fn print(bytes: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        <crate::Cli as clap::CommandFactory>::command()
    }

    #[test]
    fn each_shell_gets_a_script_naming_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(completions(&CompletionsArgs { shell }, cli())).expect("UTF-8");
            for word in ["build", "upload", "completions", "man", "maas", "overlays"] {
                assert!(text.contains(word), "{shell:?}: no {word}");
            }
        }
    }

    #[test]
    fn the_man_page_is_troff_with_a_section_per_subcommand() {
        let text = String::from_utf8(man(cli()).expect("man")).expect("UTF-8");
        assert!(text.starts_with(".TH node-image 1"), "{text}");
        assert_eq!(text.matches(".ds Aq").count(), 2, "{text}");
        assert!(text.contains(".SH \"NODE-IMAGE BUILD\"\n.SS SYNOPSIS\n"), "{text}");
        assert!(text.contains(".SH \"NODE-IMAGE UPLOAD\""), "{text}");
    }
}
