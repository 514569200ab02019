//! The `mailbox_exporter` binary: parses the command line, sets up logging and runs the command.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use mailbox_exporter::app::{self, RunOptions};
use mailbox_exporter::cli::{self, Cli, Command, DemoArgs, Exit, LogArgs, LogFormat, ProbeArgs};
use mailbox_exporter::config::Config;
use mailbox_exporter::demo::{self, DemoOptions};
use mailbox_exporter::probe;
use mailbox_exporter::source;
use mailbox_exporter::web;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// mimalloc rather than glibc's malloc: it hands freed memory back to the system, where glibc
/// keeps what a config load or a burst of probes once needed in its per-thread arenas (the
/// fleet benchmark's resident set at 10,000 accounts: see the README's performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the exit waits for blocking work still running after the service stopped (a
/// config load on a hung file); the threads that read files are never waited for.
const EXIT_GRACE: Duration = Duration::from_secs(1);

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
        None => {
            let options = RunOptions {
                config_file: cli
                    .require_config_file()
                    .unwrap_or_else(|e| e.exit())
                    .to_path_buf(),
                listen_address: cli.web_listen_address.clone(),
                web_config_file: cli.web_config_file.clone(),
                shard: cli.shard,
                enable_lifecycle: cli.web_enable_lifecycle,
            };
            serve(options)
        }
        Some(Command::Demo(args)) => run_demo(args),
        Some(Command::HashPassword(args)) => hash_password(args.cost),
    };
    exit.into()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Completes on the first SIGTERM or SIGINT.
fn termination() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// The exporter: runs until SIGTERM or SIGINT, reloading on SIGHUP.
fn serve(options: RunOptions) -> Exit {
    let result = runtime().and_then(|runtime| {
        let result = runtime.block_on(async {
            let shutdown = termination()?;
            let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
            // One pending reload is enough: it reads the file as it is when it runs.
            let (reload_tx, reload_rx) = mpsc::channel(1);
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    let _ = reload_tx.try_send(());
                }
            });
            Ok(app::run(options, shutdown, reload_rx).await)
        });
        // A load still waiting on a hung file read must not hold up the exit.
        runtime.shutdown_timeout(EXIT_GRACE);
        result
    });
    exit_of(result)
}

fn run_demo(args: &DemoArgs) -> Exit {
    let options = DemoOptions {
        listen_address: args.web_listen_address.clone(),
        web_config_file: args.web_config_file.clone(),
    };
    let result = runtime().and_then(|runtime| {
        runtime.block_on(async { Ok(demo::run(options, termination()?).await) })
    });
    exit_of(result)
}

/// A service's end: its own error (which explains itself) or a failure to set it up.
fn exit_of<E: std::fmt::Display>(result: anyhow::Result<Result<(), E>>) -> Exit {
    match result {
        Ok(Ok(())) => Exit::Ok,
        Ok(Err(e)) => {
            eprintln!("{e}");
            Exit::Failed
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Failed
        }
    }
}

/// Logs go to stderr, so `probe --json` output stays machine-readable.
fn init_tracing(log: &LogArgs) {
    let filter = EnvFilter::new(log.level.as_str());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Logfmt => builder
            .event_format(mailbox_exporter::logfmt::Logfmt)
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check_config(path: &Path) -> Exit {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{}", errors.report(path));
            return Exit::Failed;
        }
    };
    println!("{}", cli::config_summary(&config));
    if config.sources.is_empty() {
        return Exit::Ok;
    }
    let reads = match read_sources(&config) {
        Ok(reads) => reads,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Exit::Failed;
        }
    };
    let mut exit = Exit::Ok;
    for (settings, read) in config.sources.iter().zip(&reads) {
        let (report, ok) = cli::source_report(&config, settings.name(), read);
        print!("{report}");
        if !ok {
            exit = Exit::Failed;
        }
    }
    exit
}

/// Reads every account source of `config` once, in order.
fn read_sources(config: &Config) -> anyhow::Result<Vec<Result<source::Read, String>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(async {
        let mut reads = Vec::new();
        for settings in &config.sources {
            reads.push(source::read(settings).await);
        }
        reads
    }))
}

fn run_probe(path: &Path, args: &ProbeArgs) -> anyhow::Result<Exit> {
    let mut config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{}", errors.report(path));
            return Ok(Exit::Usage);
        }
    };
    let tokens = mailbox_exporter::oauth2::Tokens::default();
    if let Err(errors) = config.resolve_oauth2(&tokens) {
        eprintln!("{}", errors.report(path));
        return Ok(Exit::Usage);
    }
    if config.find_account(&args.account).is_none() && !config.sources.is_empty() {
        // Not in the file: look in the sources, as the exporter would.
        for (settings, read) in config.sources.clone().iter().zip(read_sources(&config)?) {
            match read {
                // As the exporter does: the file's accounts win a clash.
                Ok(read) => {
                    config.join(read.accounts.into_iter().map(std::sync::Arc::new));
                }
                Err(why) => eprintln!("warning: source {}: {why}", settings.name()),
            }
        }
    }
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
    let mut verdict = runtime.block_on(probe::probe(&account.target, None));
    verdict.advice = account.advise(verdict.advice.take());
    if args.json {
        println!("{}", cli::render_json(&account, &verdict));
    } else {
        print!("{}", cli::render_human(&account, &verdict));
    }
    Ok(cli::probe_exit(&verdict))
}

/// Reads one password from stdin (one trailing newline dropped) and prints its bcrypt hash.
fn hash_password(cost: u32) -> Exit {
    use std::io::Read as _;
    // One byte past the longest password bcrypt uses, plus a line ending, tells too long apart.
    let limit = web::MAX_PASSWORD_BYTES as u64 + 3;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(limit).read_to_end(&mut input) {
        eprintln!("error: cannot read the password from standard input: {e}");
        return Exit::Failed;
    }
    let password = input
        .strip_suffix(b"\r\n")
        .or_else(|| input.strip_suffix(b"\n"))
        .unwrap_or(&input);
    match web::hash_password(password, cost) {
        Ok(hash) => {
            println!("{hash}");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failed
        }
    }
}
