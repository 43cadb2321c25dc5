//! `voxproxy completions SHELL` and `voxproxy man`: shell completions and
//! the man page, generated at run time from the clap definition of the
//! command line, so they cannot drift from `--help`. Packagers write them
//! once at install time (`voxproxy man > voxproxy.1`).

use std::io::Write as _;
use std::process::ExitCode;

use super::Cli;

/// The flags of `voxproxy completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the completion script of `args.shell` to standard output.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut command = Cli::definition();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "voxproxy", &mut out);
    write_out(&out)
}

/// The man page (roff) of `voxproxy`, each subcommand's description and
/// options following the main page's sections.
#[must_use]
pub fn man_page() -> Vec<u8> {
    let command = Cli::definition();
    let mut out = Vec::new();
    // Writing to a Vec cannot fail, so the results are ignored.
    let _ = clap_mangen::Man::new(command.clone()).render(&mut out);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let _ = writeln!(out, ".SH \"VOXPROXY {}\"", sub.get_name().to_uppercase());
        let man = clap_mangen::Man::new(sub.clone().bin_name(format!("voxproxy {}", sub.get_name())));
        let _ = man.render_synopsis_section(&mut out);
        let _ = man.render_description_section(&mut out);
        let _ = man.render_options_section(&mut out);
        // `serve`'s list of every configuration key.
        if sub.get_after_long_help().is_some() {
            let _ = man.render_extra_section(&mut out);
        }
    }
    out
}

/// Writes the man page to standard output.
pub fn man() -> ExitCode {
    write_out(&man_page())
}

fn write_out(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voxproxy: cannot write to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_documents_every_subcommand_and_serve_flag() {
        let page = String::from_utf8(man_page()).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH voxproxy"), "{}", &page[..200.min(page.len())]);
        for sub in Cli::definition().get_subcommands() {
            assert!(
                page.contains(&format!("VOXPROXY {}", sub.get_name().to_uppercase())),
                "{}",
                sub.get_name()
            );
        }
        for flag in ["check\\-config", "insecure\\-skip\\-signature", "rtp\\-ports"] {
            assert!(page.contains(flag), "{flag} in the man page");
        }
    }

    #[test]
    fn serve_help_and_the_man_page_list_every_configuration_key() {
        let mut serve = Cli::definition().find_subcommand("serve").expect("serve").clone();
        let help = serve.render_long_help().to_string();
        let page = String::from_utf8(man_page()).unwrap();
        // One row per key of the declaration (the docs' table has the same rows).
        let table = voxproxy::config::key_table();
        let keys: Vec<&str> = table.lines().skip(2).filter_map(|row| row.split('`').nth(1)).collect();
        assert!(
            keys.len() > 60 && keys.contains(&"store.url") && keys.contains(&"otel.endpoint"),
            "{keys:?}"
        );
        for key in keys {
            let env = format!("VOXPROXY_{}", key.to_ascii_uppercase().replace('.', "_"));
            assert!(help.contains(key) && help.contains(&env), "{key} ({env}) in `serve --help`");
            assert!(page.contains(&env.replace('_', "\\_")) || page.contains(&env), "{env} in the man page");
        }
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::definition(), "voxproxy", &mut out);
        let script = String::from_utf8(out).unwrap();
        for word in ["serve", "completions", "man", "--check-config"] {
            assert!(script.contains(word), "{word} in the bash completions");
        }
    }
}
