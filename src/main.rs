//! The `mailbox_exporter` binary: parses the command line, sets up logging and runs the command.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use mailbox_exporter::cli::{self, Cli, Command, Exit, LogArgs, LogFormat, ProbeArgs};
use mailbox_exporter::config::Config;
use mailbox_exporter::probe;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let exit = match &cli.command {
        Some(Command::Probe(args)) => {
            let path = cli.require_config_file().unwrap_or_else(|e| e.exit());
            run_probe(path, args).unwrap_or_else(|e| {
                eprintln!("error: {e:#}");
                Exit::Usage
            })
        }
        Some(Command::CheckConfig) => {
            check_config(cli.require_config_file().unwrap_or_else(|e| e.exit()))
        }
        // Flags are parsed (and so validated) already; serving comes in a later build.
        None | Some(Command::Demo(_)) => {
            eprintln!("{}", cli::EXPORTER_UNAVAILABLE);
            Exit::Usage
        }
    };
    exit.into()
}

/// Logs go to stderr, so `probe --json` output stays machine-readable.
fn init_tracing(log: &LogArgs) {
    let filter = EnvFilter::new(log.level.as_str());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Logfmt => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check_config(path: &Path) -> Exit {
    match Config::load(path) {
        Ok(config) => {
            println!("{}", cli::config_summary(&config));
            Exit::Ok
        }
        Err(errors) => {
            eprintln!("{}", cli::config_errors_report(path, &errors));
            Exit::Failed
        }
    }
}

fn run_probe(path: &Path, args: &ProbeArgs) -> anyhow::Result<Exit> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{}", cli::config_errors_report(path, &errors));
            return Ok(Exit::Usage);
        }
    };
    let account = match cli::select_account(&config, &args.account, args.auth_mode) {
        Ok(account) => account,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Exit::Usage);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let verdict = runtime.block_on(probe::probe(&account.target, None));
    if args.json {
        println!("{}", cli::render_json(&account, &verdict));
    } else {
        print!("{}", cli::render_human(&account, &verdict));
    }
    Ok(cli::probe_exit(&verdict))
}
