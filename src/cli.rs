//! The command line: its arguments, and what the `probe` and `check-config` commands print.
//! Rendering is pure (values in, text out) so it is tested without running a probe.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::config::{Account, Config};
use crate::shard::Shard;
use crate::verdict::{Attempt, AuthMode, Method, Phase, Phases, Protocol, Reason, Verdict};
use crate::web::ListenAddress;

/// Where the exporter listens unless told otherwise (the port registered for it).
pub const DEFAULT_LISTEN_ADDRESS: &str = ":9110";

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Login succeeded / config valid.
    Ok,
    /// Login failed / config invalid.
    Failed,
    /// The command could not run: bad arguments, unusable config, unknown account.
    Usage,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// Logs in to POP3/IMAP mailboxes and reports, per account, whether authentication works.
#[derive(Debug, Parser)]
#[command(name = "mailbox_exporter", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The configuration file (YAML, or TOML when it ends in .toml).
    #[arg(long = "config.file", value_name = "FILE", global = true)]
    pub config_file: Option<PathBuf>,

    /// Address to serve metrics on: `:PORT` for every interface, or `HOST:PORT`.
    #[arg(long = "web.listen-address", value_name = "ADDRESS", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub web_listen_address: ListenAddress,

    /// Basic auth and TLS for the web side, in the Prometheus exporter toolkit's format.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Probe only this replica's share of the accounts, `i/n` (i from 0): run n replicas with
    /// i = 0..n-1 and every account is probed by exactly one of them.
    #[arg(long, value_name = "i/n", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// Allow reloading the configuration with `POST /-/reload` (off: it answers 403). SIGHUP
    /// reloads either way.
    #[arg(long = "web.enable-lifecycle")]
    pub web_enable_lifecycle: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Only log messages of this severity or above.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info, global = true)]
    pub level: LogLevel,

    /// Log line format (logs go to stderr).
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt, global = true)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe one account now, print the redacted transcript and the verdict; exit 0 when the
    /// login succeeded, 1 when it failed, 2 on a usage or config error.
    Probe(ProbeArgs),
    /// Validate the configuration; exit 0 when it is valid, 1 otherwise.
    CheckConfig,
    /// Run the exporter against built-in simulated mail servers.
    Demo(DemoArgs),
    /// Read a password from standard input and print its bcrypt hash for the web config's
    /// `basic_auth_users`; passwords over 72 bytes are refused (bcrypt would ignore the rest).
    HashPassword(HashPasswordArgs),
}

#[derive(Debug, Args)]
pub struct HashPasswordArgs {
    /// bcrypt cost: each step doubles the time a check takes (10 is about 80 ms).
    #[arg(long, value_name = "N", default_value_t = crate::web::DEFAULT_HASH_COST,
          value_parser = clap::value_parser!(u32).range(4..=20))]
    pub cost: u32,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The account's configured name.
    #[arg(long, value_name = "NAME")]
    pub account: String,

    /// Override the account's POP3 auth mode for this probe: BEST, APOP, CRAM-MD5, PASS, or for
    /// an OAuth2 account XOAUTH2 or OAUTHBEARER.
    #[arg(long = "auth-mode", value_name = "MODE", value_parser = parse_auth_mode)]
    pub auth_mode: Option<AuthMode>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve metrics on: `:PORT` for every interface, or `HOST:PORT`.
    #[arg(long = "web.listen-address", value_name = "ADDRESS", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub web_listen_address: ListenAddress,

    /// Basic auth and TLS for the web side, in the Prometheus exporter toolkit's format.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

fn parse_auth_mode(s: &str) -> Result<AuthMode, String> {
    s.parse()
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
        .map_err(|e: crate::shard::ShardError| e.to_string())
}

impl Cli {
    /// The `--config.file` a subcommand needs, or the usage error clap would have given.
    pub fn require_config_file(&self) -> Result<&Path, clap::Error> {
        self.config_file.as_deref().ok_or_else(|| {
            let mut command = Cli::command();
            // Built, so that the subcommand's usage line carries the full binary name.
            command.build();
            let sub = match &self.command {
                Some(Command::Probe(_)) => Some("probe"),
                Some(Command::CheckConfig) => Some("check-config"),
                Some(Command::Demo(_)) => Some("demo"),
                Some(Command::HashPassword(_)) => Some("hash-password"),
                None => None,
            };
            let command = match sub.and_then(|s| command.find_subcommand_mut(s)) {
                Some(sub) => sub,
                None => &mut command,
            };
            command.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the following required argument was not provided: --config.file <FILE>",
            )
        })
    }
}

/// `check-config` output for a valid config, e.g. `config OK: 3 groups, 12 accounts`.
pub fn config_summary(config: &Config) -> String {
    let groups = config.groups.len();
    let accounts = config.account_count();
    let mut line = format!(
        "config OK: {groups} {}, {accounts} {}",
        plural(groups, "group", "groups"),
        plural(accounts, "account", "accounts")
    );
    let sources = config.sources.len();
    if sources > 0 {
        let _ = write!(
            line,
            " in the file, {sources} account {}",
            plural(sources, "source", "sources")
        );
    } else if accounts == 0 {
        line.push_str(" (nothing will be probed)");
    }
    line
}

/// What `check-config` prints for one account source, and whether it is usable: how many
/// accounts it holds per in-group, and each skipped row with why (never a password). A source
/// that cannot be read, or accounts named like the config file's, are not usable.
pub fn source_report(
    config: &Config,
    name: &str,
    read: &Result<crate::source::Read, String>,
) -> (String, bool) {
    let read = match read {
        Ok(read) => read,
        Err(why) => return (format!("source {name}: cannot be read: {why}\n"), false),
    };
    let mut per_group: std::collections::BTreeMap<&str, usize> = Default::default();
    for account in &read.accounts {
        *per_group.entry(account.group.as_str()).or_default() += 1;
    }
    let n = read.accounts.len();
    let mut out = format!(
        "source {name}: {n} {} in {} {}",
        plural(n, "account", "accounts"),
        per_group.len(),
        plural(per_group.len(), "in-group", "in-groups"),
    );
    if !per_group.is_empty() {
        let groups: Vec<String> = per_group.iter().map(|(g, n)| format!("{g} {n}")).collect();
        let _ = write!(out, ": {}", groups.join(", "));
    }
    let skipped = read.skipped.len();
    if skipped > 0 {
        let _ = write!(
            out,
            "; {skipped} {} skipped",
            plural(skipped, "row", "rows")
        );
    }
    out.push('\n');
    for (id, why) in &read.skipped {
        let _ = writeln!(out, "  row {id:?} skipped: {why}");
    }
    let mut ok = true;
    for account in &read.accounts {
        if let Some(file) = config.find_account(&account.name) {
            ok = false;
            let _ = writeln!(
                out,
                "  error: email_account_id {:?} is also the name of an account in the config \
                 file (group {:?}); rename one of them",
                account.name, file.group
            );
        }
    }
    (out, ok)
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The account to probe, with `--auth-mode` applied. IMAP accounts refuse an auth mode
/// rather than silently ignoring it.
pub fn select_account(
    config: &Config,
    name: &str,
    auth_mode: Option<AuthMode>,
) -> Result<Account, String> {
    let Some(account) = config.find_account(name) else {
        let known: Vec<&str> = config.accounts().map(|a| a.name.as_str()).collect();
        let hint = match known.len() {
            0 => "the config has no accounts".to_string(),
            n if n <= 20 => format!("known accounts: {}", known.join(", ")),
            n => format!("{n} accounts are configured; check the spelling"),
        };
        return Err(format!("no account named {name:?}: {hint}"));
    };
    let mut account = account.clone();
    if let Some(mode) = auth_mode {
        if account.target.protocol == Protocol::Imap {
            return Err(format!(
                "--auth-mode applies to POP3 accounts only; {name:?} is an IMAP account, \
                 which picks the strongest working mechanism itself"
            ));
        }
        account.target.auth_mode = mode;
    }
    Ok(account)
}

/// 0 when the login succeeded, 1 when it did not.
pub fn probe_exit(verdict: &Verdict) -> Exit {
    if verdict.success {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// What `probe` prints for people.
pub fn render_human(account: &Account, verdict: &Verdict) -> String {
    let target = &account.target;
    let mut out = String::new();
    let _ = write!(
        out,
        "account {:?} (group {:?}): {} {}, tls {}",
        account.name,
        account.group,
        target.protocol,
        target.server(),
        target.tls.mode
    );
    if target.protocol == Protocol::Pop3 {
        let _ = write!(out, ", auth_mode {}", target.auth_mode);
    }
    out.push_str("\n\ntranscript:\n");
    if verdict.transcript.is_empty() {
        out.push_str("  (empty)\n");
    }
    for line in &verdict.transcript {
        let _ = writeln!(out, "  {line}");
    }
    out.push_str("\nattempts:\n");
    if verdict.attempts.is_empty() {
        out.push_str("  (none)\n");
    }
    for attempt in &verdict.attempts {
        let _ = writeln!(out, "  {}: {}", attempt.method, attempt.result.as_str());
    }
    out.push('\n');
    out.push_str(&verdict_line(verdict));
    out.push('\n');
    let phases: Vec<String> = Phase::ALL
        .iter()
        .map(|&p| format!("{p} {} ms", verdict.phases.get(p).as_millis()))
        .collect();
    let _ = writeln!(out, "phases: {}", phases.join(", "));
    if verdict.cleartext {
        out.push_str("warning: the password crossed the network unencrypted\n");
    }
    if let Some(expiry) = verdict.cert_expiry {
        let _ = writeln!(out, "tls certificate expires: {}", format_timestamp(expiry));
    }
    if let Some(advice) = &verdict.advice {
        let _ = writeln!(out, "advice: {advice}");
    }
    out
}

/// `result: success with PASS (after a fallback)` or `result: FAILED: auth_rejected: ...`.
fn verdict_line(verdict: &Verdict) -> String {
    if verdict.success {
        let mut line = match verdict.method {
            Some(method) => format!("result: success with {method}"),
            None => "result: success".to_string(),
        };
        if verdict.fallback {
            line.push_str(" (after a fallback)");
        }
        line
    } else {
        let mut line = format!(
            "result: FAILED: {}",
            verdict.reason.map_or("unknown", Reason::as_str)
        );
        if let Some(detail) = &verdict.detail {
            line.push_str(": ");
            line.push_str(detail);
        }
        line
    }
}

/// RFC 3339 for a sane epoch timestamp, the raw number otherwise.
fn format_timestamp(seconds: i64) -> String {
    match crate::verdict::expiry_time(seconds) {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => seconds.to_string(),
    }
}

/// The `--json` object; field order is the output's key order.
#[derive(Serialize)]
struct ProbeJson<'a> {
    account: &'a str,
    group: &'a str,
    protocol: Protocol,
    server: String,
    success: bool,
    method: Option<Method>,
    reason: Option<Reason>,
    detail: Option<&'a str>,
    fallback: bool,
    cleartext: bool,
    attempts: &'a [Attempt],
    phases: Phases,
    transcript: &'a [String],
    advice: Option<&'a str>,
    /// The certificate's notAfter, seconds since the epoch.
    cert_expiry: Option<i64>,
}

/// What `probe --json` prints: one JSON object on one line.
pub fn render_json(account: &Account, verdict: &Verdict) -> String {
    let json = ProbeJson {
        account: &account.name,
        group: &account.group,
        protocol: account.target.protocol,
        server: account.target.server(),
        success: verdict.success,
        method: verdict.method,
        reason: verdict.reason,
        detail: verdict.detail.as_deref(),
        fallback: verdict.fallback,
        cleartext: verdict.cleartext,
        attempts: &verdict.attempts,
        phases: verdict.phases,
        transcript: &verdict.transcript,
        advice: verdict.advice.as_deref(),
        cert_expiry: verdict.cert_expiry,
    };
    // Every field is a plain string, number, bool or list of them: serializing cannot fail.
    serde_json::to_string(&json).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;
    use crate::verdict::AttemptResult;
    use serde_json::{Value, json};
    use std::time::Duration;

    fn account(protocol: Protocol) -> Account {
        Account::for_test("support", "support-inbox", protocol)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// BEST stepped past a rejected APOP and logged in with PASS.
    fn fallback_verdict() -> Verdict {
        Verdict {
            success: true,
            method: Some(Method::Pass),
            reason: None,
            detail: None,
            fallback: true,
            cleartext: false,
            attempts: vec![
                Attempt {
                    method: Method::Apop,
                    result: AttemptResult::Rejected,
                },
                Attempt {
                    method: Method::Pass,
                    result: AttemptResult::Success,
                },
            ],
            phases: Phases {
                connect: ms(12),
                tls: ms(30),
                greeting: ms(1),
                auth: ms(40),
                total: ms(83),
            },
            cert_expiry: Some(1_777_593_600),
            advice: Some("APOP was advertised but rejected; pin auth_mode: PASS".into()),
            transcript: vec![
                "S: +OK ready <1.2@mail.example.com>".into(),
                "C: APOP support@example.com ***".into(),
                "S: -ERR [AUTH] authentication failed".into(),
                "C: USER support@example.com".into(),
                "S: +OK".into(),
                "C: PASS ***".into(),
                "S: +OK logged in".into(),
            ],
        }
    }

    fn rejected_verdict() -> Verdict {
        Verdict {
            success: false,
            method: None,
            reason: Some(Reason::AuthRejected),
            detail: Some("PASS: -ERR [AUTH] authentication failed".into()),
            fallback: false,
            cleartext: true,
            attempts: vec![Attempt {
                method: Method::Pass,
                result: AttemptResult::Rejected,
            }],
            phases: Phases::default(),
            cert_expiry: None,
            advice: None,
            transcript: vec![],
        }
    }

    #[test]
    fn human_output_of_a_fallback() {
        let text = render_human(&account(Protocol::Pop3), &fallback_verdict());
        let expected = "\
account \"support-inbox\" (group \"support\"): pop3 mail.example.com:995, tls implicit, auth_mode BEST

transcript:
  S: +OK ready <1.2@mail.example.com>
  C: APOP support@example.com ***
  S: -ERR [AUTH] authentication failed
  C: USER support@example.com
  S: +OK
  C: PASS ***
  S: +OK logged in

attempts:
  APOP: rejected
  PASS: success

result: success with PASS (after a fallback)
phases: connect 12 ms, tls 30 ms, greeting 1 ms, auth 40 ms, total 83 ms
tls certificate expires: 2026-05-01T00:00:00Z
advice: APOP was advertised but rejected; pin auth_mode: PASS
";
        assert_eq!(text, expected);
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn human_output_of_a_failure() {
        let text = render_human(&account(Protocol::Imap), &rejected_verdict());
        assert!(text.starts_with(
            "account \"support-inbox\" (group \"support\"): imap mail.example.com:995, tls implicit\n"
        ));
        assert!(text.contains("transcript:\n  (empty)\n"));
        assert!(text.contains("  PASS: rejected\n"));
        assert!(
            text.contains(
                "result: FAILED: auth_rejected: PASS: -ERR [AUTH] authentication failed\n"
            )
        );
        assert!(
            text.contains("phases: connect 0 ms, tls 0 ms, greeting 0 ms, auth 0 ms, total 0 ms\n")
        );
        assert!(text.contains("warning: the password crossed the network unencrypted\n"));
        assert!(!text.contains("advice:"));
        assert!(!text.contains("tls certificate"));
    }

    #[test]
    fn json_output_of_a_fallback() {
        let text = render_json(&account(Protocol::Pop3), &fallback_verdict());
        assert_eq!(text.lines().count(), 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({
                "account": "support-inbox",
                "group": "support",
                "protocol": "pop3",
                "server": "mail.example.com:995",
                "success": true,
                "method": "PASS",
                "reason": null,
                "detail": null,
                "fallback": true,
                "cleartext": false,
                "attempts": [
                    {"method": "APOP", "result": "rejected"},
                    {"method": "PASS", "result": "success"}
                ],
                "phases": {"connect": 0.012, "tls": 0.03, "greeting": 0.001, "auth": 0.04, "total": 0.083},
                "transcript": [
                    "S: +OK ready <1.2@mail.example.com>",
                    "C: APOP support@example.com ***",
                    "S: -ERR [AUTH] authentication failed",
                    "C: USER support@example.com",
                    "S: +OK",
                    "C: PASS ***",
                    "S: +OK logged in"
                ],
                "advice": "APOP was advertised but rejected; pin auth_mode: PASS",
                "cert_expiry": 1_777_593_600
            })
        );
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn json_output_of_a_failure() {
        let v: Value =
            serde_json::from_str(&render_json(&account(Protocol::Imap), &rejected_verdict()))
                .unwrap();
        assert_eq!(v["protocol"], "imap");
        assert_eq!(v["success"], false);
        assert_eq!(v["method"], Value::Null);
        assert_eq!(v["reason"], "auth_rejected");
        assert_eq!(v["detail"], "PASS: -ERR [AUTH] authentication failed");
        assert_eq!(v["cleartext"], true);
        assert_eq!(v["fallback"], false);
        assert_eq!(v["advice"], Value::Null);
        assert_eq!(v["cert_expiry"], Value::Null);
        assert_eq!(v["transcript"], json!([]));
        assert_eq!(v["phases"]["total"], 0.0);
    }

    #[test]
    fn ipv6_server_is_bracketed() {
        let mut a = account(Protocol::Pop3);
        a.target.host = "::1".into();
        let v: Value = serde_json::from_str(&render_json(&a, &rejected_verdict())).unwrap();
        assert_eq!(v["server"], "[::1]:995");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(probe_exit(&fallback_verdict()), Exit::Ok);
        assert_eq!(probe_exit(&rejected_verdict()), Exit::Failed);
        assert_eq!(
            [Exit::Ok, Exit::Failed, Exit::Usage].map(Exit::code),
            [0, 1, 2]
        );
    }

    const CONFIG: &str = "
groups:
  - name: support
    accounts:
      - {name: pop, server: pop.example.com, username: u, password: p}
      - {name: imap, server: imap.example.com, username: u, password: p, protocol: imap}
";

    #[test]
    fn selecting_an_account_applies_the_auth_mode() {
        let config = Config::from_str_with_format(CONFIG, Format::Yaml).unwrap();
        let a = select_account(&config, "pop", Some(AuthMode::Pass)).unwrap();
        assert_eq!(a.target.auth_mode, AuthMode::Pass);
        let a = select_account(&config, "pop", None).unwrap();
        assert_eq!(a.target.auth_mode, AuthMode::Best);
    }

    #[test]
    fn auth_mode_is_refused_on_imap() {
        let config = Config::from_str_with_format(CONFIG, Format::Yaml).unwrap();
        let e = select_account(&config, "imap", Some(AuthMode::Pass)).unwrap_err();
        assert!(e.contains("POP3 accounts only"), "{e}");
        assert!(e.contains("\"imap\" is an IMAP account"), "{e}");
        assert!(select_account(&config, "imap", None).is_ok());
    }

    #[test]
    fn unknown_account_lists_the_known_ones() {
        let config = Config::from_str_with_format(CONFIG, Format::Yaml).unwrap();
        let e = select_account(&config, "nope", None).unwrap_err();
        assert_eq!(e, "no account named \"nope\": known accounts: pop, imap");
    }

    #[test]
    fn summaries() {
        let config = Config::from_str_with_format(CONFIG, Format::Yaml).unwrap();
        assert_eq!(config_summary(&config), "config OK: 1 group, 2 accounts");
        let empty = Config::from_str_with_format("{}", Format::Yaml).unwrap();
        assert_eq!(
            config_summary(&empty),
            "config OK: 0 groups, 0 accounts (nothing will be probed)"
        );
        let errors = Config::from_str_with_format("timeout: 0s\nconcurrency: 0\n", Format::Yaml)
            .unwrap_err();
        assert_eq!(
            errors.report(Path::new("x.yaml")),
            "timeout: must be greater than zero\nconcurrency: must be at least 1\n\
             config x.yaml rejected: 2 errors"
        );
    }

    #[test]
    fn flags_parse_prometheus_style() {
        let cli = Cli::try_parse_from([
            "mailbox_exporter",
            "probe",
            "--config.file=c.yaml",
            "--account=a",
            "--auth-mode=pass",
            "--json",
            "--log.level=debug",
        ])
        .unwrap();
        assert_eq!(cli.config_file.as_deref(), Some(Path::new("c.yaml")));
        assert_eq!(cli.log.level, LogLevel::Debug);
        let Some(Command::Probe(args)) = cli.command else {
            panic!("not a probe: {:?}", cli.command)
        };
        assert_eq!(args.account, "a");
        assert_eq!(args.auth_mode, Some(AuthMode::Pass));
        assert!(args.json);

        // The config file may come before the subcommand too.
        let cli = Cli::try_parse_from([
            "mailbox_exporter",
            "--config.file",
            "c.yaml",
            "check-config",
        ])
        .unwrap();
        assert_eq!(cli.config_file.as_deref(), Some(Path::new("c.yaml")));
        assert!(matches!(cli.command, Some(Command::CheckConfig)));

        let cli = Cli::try_parse_from(["mailbox_exporter"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.web_listen_address.to_string(), ":9110");
        assert_eq!(cli.web_listen_address.host, None);
        assert_eq!(cli.web_config_file, None);
        assert_eq!(cli.shard, None);
        assert!(
            !cli.web_enable_lifecycle,
            "off by default, as in Prometheus"
        );
        assert_eq!(cli.log.format, LogFormat::Logfmt);
        assert!(cli.require_config_file().is_err());

        let cli = Cli::try_parse_from([
            "mailbox_exporter",
            "demo",
            "--web.listen-address=127.0.0.1:9999",
            "--log.format=json",
        ])
        .unwrap();
        assert_eq!(cli.log.format, LogFormat::Json);
        let Some(Command::Demo(args)) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(args.web_listen_address.to_string(), "127.0.0.1:9999");

        let cli = Cli::try_parse_from([
            "mailbox_exporter",
            "--config.file=c.yaml",
            "--web.listen-address=[::1]:9110",
            "--web.config.file=web.yml",
            "--shard=1/3",
            "--web.enable-lifecycle",
        ])
        .unwrap();
        assert!(cli.web_enable_lifecycle);
        assert_eq!(cli.web_listen_address.host.as_deref(), Some("::1"));
        assert_eq!(cli.web_config_file.as_deref(), Some(Path::new("web.yml")));
        assert_eq!(cli.shard, Some(Shard { index: 1, count: 3 }));
    }

    #[test]
    fn hash_password_takes_a_cost() {
        let cli = Cli::try_parse_from(["mailbox_exporter", "hash-password"]).unwrap();
        let Some(Command::HashPassword(args)) = cli.command else {
            panic!("not hash-password")
        };
        assert_eq!(args.cost, crate::web::DEFAULT_HASH_COST);
        let cli = Cli::try_parse_from(["mailbox_exporter", "hash-password", "--cost=12"]).unwrap();
        assert!(matches!(cli.command, Some(Command::HashPassword(a)) if a.cost == 12));
        for cost in ["3", "21", "x"] {
            let arg = format!("--cost={cost}");
            let e = Cli::try_parse_from(["mailbox_exporter", "hash-password", &arg]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{cost}");
        }
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["mailbox_exporter", "probe", "--config.file=c.yaml"][..],
            &[
                "mailbox_exporter",
                "probe",
                "--account=a",
                "--auth-mode=BETS",
            ],
            &["mailbox_exporter", "--log.level=loud"],
            &["mailbox_exporter", "--no-such-flag"],
            &["mailbox_exporter", "--web.listen-address=bogus"],
            &["mailbox_exporter", "demo", "--web.listen-address=9110"],
            &["mailbox_exporter", "--shard=3/3"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
