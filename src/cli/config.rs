//! `serve --config FILE.toml`: every `serve` flag can come from a file.
//!
//! Keys are the flag names without `--` (`listen = "0.0.0.0:4433"`,
//! `lease-ttl = "30s"`, `allow-clock-rollback = true`). Precedence is flag,
//! then `LB_*` environment variable, then the file, then the default: the
//! file's entries are turned into the flags they stand for and appended to
//! the command line only where neither a flag nor a variable gave a value,
//! so clap validates them exactly as if they had been typed.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::Args;

/// Parses the command line, then folds in `serve --config`'s file. Exits
/// (code 2, with clap's message) on any misuse, as a bad flag does.
pub fn parse() -> Args {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let matches = command().get_matches_from(&argv);
    let extra = match file_flags(&matches) {
        Ok(extra) => extra,
        Err(message) => Args::command().error(clap::error::ErrorKind::InvalidValue, message).exit(),
    };
    if extra.is_empty() {
        return Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    }
    let all: Vec<OsString> = argv.into_iter().chain(extra).collect();
    let matches = command().get_matches_from(all);
    Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The command line's definition, with the client flags (global, so any
/// client command takes them after its name) hidden from the help of the
/// commands that do not connect to a broker.
fn command() -> clap::Command {
    let mut cmd = Args::command();
    // A subcommand that defines an argument itself does not get the global
    // one propagated into it: give these a hidden copy of each.
    let client_flags: Vec<clap::Arg> =
        cmd.get_arguments().filter(|a| a.is_global_set()).map(|a| a.clone().global(false).hide(true)).collect();
    for name in ["serve", "machine-id", "admin"] {
        let flags = client_flags.clone();
        cmd = cmd.mut_subcommand(name, move |sub| sub.args(flags));
    }
    cmd
}

/// The flags `serve --config FILE` stands for, where nothing else set them.
fn file_flags(matches: &ArgMatches) -> Result<Vec<OsString>, String> {
    let Some(("serve", serve)) = matches.subcommand() else { return Ok(Vec::new()) };
    let Some(path) = serve.get_one::<std::path::PathBuf>("config") else { return Ok(Vec::new()) };
    let table = read(path)?;
    let command = Args::command();
    let Some(serve_cmd) = command.find_subcommand("serve") else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (key, value) in table {
        let arg =
            serve_cmd.get_arguments().find(|a| a.get_long() == Some(key.as_str()) && key != "config").ok_or_else(
                || format!("{}: unknown key `{key}`: keys are `serve` flags without the `--`", path.display()),
            )?;
        let id = arg.get_id().as_str();
        if matches!(serve.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let flag = format!("--{key}");
        match value {
            toml::Value::Boolean(true) => out.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => out.extend([flag.into(), s.into()]),
            toml::Value::Integer(n) => out.extend([flag.into(), n.to_string().into()]),
            toml::Value::Float(x) => out.extend([flag.into(), x.to_string().into()]),
            other => {
                let kind = other.type_str();
                return Err(format!("{}: `{key}` must be a string, a number or a boolean, not {kind}", path.display()));
            }
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| format!("{} is not valid TOML: {e}", path.display()))
}
