//! Configuration: the YAML (or TOML) file plus `MAILBOX_EXPORTER__*` environment overrides,
//! deserialized into permissive raw types and validated into [`Config`] in one step that
//! reports every problem at once.
//!
//! Layering, most specific first: an account's own fields, its group's `defaults`, the global
//! `defaults`, the top-level `interval`/`timeout`, then the built-in `DEFAULT_*` constants.
//!
//! Relative `password_file` and `ca_file` paths are resolved against the config file's
//! directory, as Prometheus does. A config without any group is valid (a shard or a template
//! may legitimately be empty); loading one logs a warning.
//!
//! Files are read through [`crate::files`] (regular files only, bounded, under a deadline), and
//! `limits` bounds the rest: YAML alias expansion, names, and how much of a value an error
//! quotes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::files::Reader;
use crate::probe::{Target, TlsSettings};
use crate::secret::Password;
use crate::verdict::{AuthMode, Protocol, TlsMode};

mod limits;
mod oauth2;
mod sources;

pub use limits::{check_yaml, clip, name_problem, quote};
use oauth2::{OAuth2Layer, RawOAuth2};
pub use sources::{
    DEFAULT_REFRESH, DEFAULT_SOURCE_TIMEOUT, Database, Reach, SourceSettings, VicidialSettings,
};

/// How often each account is probed unless configured: often enough to page within minutes,
/// rarely enough not to look like an attack.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Deadline of a whole probe unless configured.
pub const DEFAULT_TIMEOUT: Duration = crate::probe::DEFAULT_TIMEOUT;
/// Probes in flight in the whole process.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Probes in flight against one server: a few, so a shared server never sees a login storm.
pub const DEFAULT_PER_SERVER_CONCURRENCY: usize = 4;
/// Failed logins per host and window unless configured: fail2ban's stock Dovecot jail bans
/// an address at 5 failures within 10 minutes, so 4 in 10 minutes stays under it.
pub const DEFAULT_FAILURE_BUDGET: FailureBudgetSettings = FailureBudgetSettings {
    failures: 4,
    window: Duration::from_secs(10 * 60),
};
/// Prefix of the environment variables that override the file, `__` separating the levels.
pub const ENV_PREFIX: &str = "MAILBOX_EXPORTER";
const ENV_SEPARATOR: &str = "__";

/// Errors listed for one config: enough to fix a config by, few enough that a broken one
/// never makes a huge log line or HTTP response.
const MAX_LISTED_ERRORS: usize = 1000;
/// Probing more often than this only burns the server's login rate limits.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Beyond a week a broken mailbox would go unnoticed for too long to be monitoring.
const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Below this not even a loopback TLS handshake completes.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// A login that needs longer than this is a failure worth reporting.
const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// More sockets than this would exhaust file descriptors long before helping.
const MAX_CONCURRENCY: u64 = 100_000;
const MAX_PER_SERVER_CONCURRENCY: u64 = 1_000;
/// Shorter budget windows serve tests; a day is longer than any ban-finding window.
const MIN_BUDGET_WINDOW: Duration = Duration::from_secs(1);
const MAX_BUDGET_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// A budget this large is no budget.
const MAX_BUDGET_FAILURES: u64 = 1_000_000;

/// The file format, chosen by extension: `.toml` is TOML, anything else YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::Yaml,
        }
    }

    fn file_format(self) -> config::FileFormat {
        match self {
            Format::Yaml => config::FileFormat::Yaml,
            Format::Toml => config::FileFormat::Toml,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The global default interval (top-level `interval`, overridden by `defaults.interval`).
    pub interval: Duration,
    /// The global default timeout (top-level `timeout`, overridden by `defaults.timeout`).
    pub timeout: Duration,
    pub concurrency: usize,
    pub per_server_concurrency: usize,
    /// The failed-login budget of each server; `None`: off (`failures: 0`).
    pub failure_budget: Option<FailureBudgetSettings>,
    pub groups: Vec<Group>,
    /// Where more accounts come from (`sources`); their accounts join `groups` as they are
    /// read.
    pub sources: Vec<SourceSettings>,
}

/// `failure_budget`: at most `failures` failed logins per host within any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureBudgetSettings {
    /// At least 2: one rung and the aborted login after it.
    pub failures: u32,
    pub window: Duration,
}

/// A group of accounts, e.g. the mailboxes feeding one contact-centre queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Shared with the scheduler and the account store, which keep them between reloads.
    pub accounts: Vec<Arc<Account>>,
}

/// One mailbox to probe. `name` is unique across the whole config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub group: String,
    pub name: String,
    pub interval: Duration,
    /// `target.oauth2` is filled from these by [`Config::resolve_oauth2`].
    pub target: Target,
    /// The account's token source, when it logs in with OAuth2 (boxed: most accounts have none).
    pub oauth2: Option<Box<crate::oauth2::Settings>>,
    /// Where the account is defined.
    pub origin: Origin,
}

/// Where an account is defined: the config file, or a row of an account source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    #[default]
    File,
    Vicidial(VicidialRow),
}

impl Origin {
    /// The `source` label value: `file`, or the source's name.
    pub fn source(&self) -> &str {
        match self {
            Origin::File => "file",
            Origin::Vicidial(row) => &row.source,
        }
    }
}

impl Account {
    /// A probe's advice for this account, in the terms of where it is defined: a VICIdial
    /// account's also names the VICIdial screen field to change.
    pub fn advise(&self, advice: Option<String>) -> Option<String> {
        match &self.origin {
            Origin::File => advice,
            Origin::Vicidial(_) => {
                advice.map(|advice| crate::source::vicidial::advise(&self.name, advice))
            }
        }
    }
}

/// What a VICIdial account keeps of its row besides the probe settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VicidialRow {
    /// The source's name.
    pub source: String,
    /// `email_account_name`.
    pub email_account_name: String,
    /// `user_group`.
    pub user_group: String,
    /// `email_frequency_check_mins`: VICIdial's own login interval.
    pub frequency_check_mins: u8,
}

#[cfg(test)]
impl Account {
    /// An account for unit tests: POP3 or IMAP on `mail.example.com:995` with implicit,
    /// verified TLS, user `NAME@example.com`, BEST, 5 min interval, 30 s timeout.
    pub(crate) fn for_test(group: &str, name: &str, protocol: Protocol) -> Account {
        Account {
            group: group.into(),
            name: name.into(),
            interval: DEFAULT_INTERVAL,
            target: Target {
                protocol,
                host: "mail.example.com".into(),
                port: 995,
                tls: TlsSettings {
                    mode: TlsMode::Implicit,
                    verify: true,
                    ca_file: None,
                },
                username: format!("{name}@example.com"),
                password: Password::new("hunter2"),
                auth_mode: AuthMode::Best,
                timeout: DEFAULT_TIMEOUT,
                oauth2: None,
            },
            oauth2: None,
            origin: Origin::File,
        }
    }
}

impl Config {
    /// Gives every OAuth2 account its login, from `tokens`' shared source for its settings
    /// (an existing one when the settings are unchanged, so cached tokens survive a reload).
    /// Blocks to read a token endpoint's `ca_file`.
    pub fn resolve_oauth2(&mut self, tokens: &crate::oauth2::Tokens) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for group in &mut self.groups {
            for account in &mut group.accounts {
                // Fresh from the file, so not shared yet: no copy is made.
                let account = Arc::make_mut(account);
                account.target.oauth2 = match &account.oauth2 {
                    None => None,
                    Some(settings) => match tokens.login(settings) {
                        Ok(login) => Some(login),
                        Err(message) => {
                            errors.push(ConfigError::new(
                                format!("{} / {}", group.name, account.name),
                                "oauth2",
                                message,
                            ));
                            None
                        }
                    },
                };
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Loads `path`, with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with_env(path, std::env::vars())
    }

    /// Loads `path`, with `env` standing in for the process environment (overrides and
    /// `password_env` lookups).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let text = crate::files::read(path, MAX_CONFIG_FILE)
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                })
            })
            .map_err(|e| {
                ConfigErrors::single(ConfigError::new(
                    "",
                    "",
                    format!("cannot read {path:?}: {e}"),
                ))
            })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        let env: HashMap<String, String> = env.into_iter().collect();
        let raw = RawConfig::parse(&text, Format::from_path(path), &env)
            .map_err(|errors| errors.in_file(path))?;
        let config = raw.validate(base_dir, &env)?;
        if config.account_count() == 0 && config.sources.is_empty() {
            tracing::warn!(path = %path.display(), "the configuration has no accounts: nothing will be probed");
        }
        Ok(config)
    }

    /// Parses `text` without any environment (no overrides, every `password_env` unset);
    /// relative paths are resolved against the current directory.
    pub fn from_str_with_format(text: &str, format: Format) -> Result<Config, ConfigErrors> {
        Config::from_str_with_env(text, format, Path::new(""), std::iter::empty())
    }

    /// Parses `text` with `env` as the environment; relative paths are resolved against
    /// `base_dir`.
    pub fn from_str_with_env(
        text: &str,
        format: Format,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let env: HashMap<String, String> = env.into_iter().collect();
        let raw = RawConfig::parse(text, format, &env)?;
        raw.validate(base_dir, &env)
    }

    /// Adds `accounts` (a source's) to their groups, creating groups as needed. Returns the
    /// names left out because an account of that name is already there.
    pub fn join(&mut self, accounts: impl IntoIterator<Item = Arc<Account>>) -> Vec<String> {
        let mut names: std::collections::HashSet<String> =
            self.accounts().map(|a| a.name.clone()).collect();
        let mut groups: HashMap<String, usize> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.clone(), i))
            .collect();
        let mut clashes = Vec::new();
        for account in accounts {
            if !names.insert(account.name.clone()) {
                clashes.push(account.name.clone());
                continue;
            }
            let i = *groups.entry(account.group.clone()).or_insert_with(|| {
                self.groups.push(Group {
                    name: account.group.clone(),
                    accounts: Vec::new(),
                });
                self.groups.len() - 1
            });
            self.groups[i].accounts.push(account);
        }
        clashes
    }

    pub fn find_account(&self, name: &str) -> Option<&Account> {
        self.accounts().find(|a| a.name == name).map(|a| &**a)
    }

    /// Every account, group by group, in file order.
    pub fn accounts(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.groups.iter().flat_map(|g| g.accounts.iter())
    }

    pub fn account_count(&self) -> usize {
        self.groups.iter().map(|g| g.accounts.len()).sum()
    }
}

/// One problem in a config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// e.g. `groups[0] "support" / accounts[2] "sales-inbox"`; empty at the top level.
    pub location: String,
    /// The key at fault, e.g. `auth_mode`; empty when the problem is the whole entry.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(
        location: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            location: location.into(),
            field: field.into(),
            message: limits::clip(message.into()),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in [&self.location, &self.field] {
            if !part.is_empty() {
                write!(f, "{part}: ")?;
            }
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config; displayed one per line. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    fn single(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }

    /// Errors about the file as a whole say which file.
    fn in_file(mut self, path: &Path) -> Self {
        for e in &mut self.0 {
            if e.location.is_empty() && e.field.is_empty() {
                e.location = path.display().to_string();
            }
        }
        self
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// Every error, one per line, then a count naming the file: what the commands print.
    pub fn report(&self, path: &Path) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for e in self.errors() {
            let _ = writeln!(out, "{e}");
        }
        let n = self.len();
        let _ = write!(
            out,
            "config {} rejected: {n} {}",
            path.display(),
            if n == 1 { "error" } else { "errors" }
        );
        out
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors::single(error)
    }
}

impl ConfigErrors {
    /// Adds a problem found outside the config file itself (e.g. in the web config file).
    pub fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }
}

// ---------------------------------------------------------------------------------------------
// Raw: what serde accepts. Scalars are kept as JSON values so that a wrong type is one more
// error found by validation, not the end of deserialization.

/// A value that is either the expected shape or kept as-is for validation to complain about.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Valid(T),
    Invalid(Value),
}

impl<T: fmt::Debug> fmt::Debug for Lenient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lenient::Valid(v) => v.fmt(f),
            // The value might be anything the user typed, a password included.
            Lenient::Invalid(v) => write!(f, "Invalid({})", kind(v)),
        }
    }
}

/// Keys nobody asked for. `Debug` lists the keys only: a misspelt `pasword` holds a secret.
#[derive(Default, Deserialize)]
#[serde(transparent)]
struct Unknown(BTreeMap<String, Value>);

impl fmt::Debug for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A raw password value; `Debug` prints `***`.
#[derive(Deserialize)]
#[serde(transparent)]
struct RawSecret(Value);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The config as deserialized, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    interval: Option<Value>,
    timeout: Option<Value>,
    concurrency: Option<Value>,
    per_server_concurrency: Option<Value>,
    failure_budget: Option<Value>,
    defaults: Option<Lenient<RawDefaults>>,
    groups: Option<Lenient<Vec<Lenient<RawGroup>>>>,
    sources: Option<Lenient<Vec<Lenient<sources::RawSource>>>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDefaults {
    protocol: Option<Value>,
    tls: Option<Value>,
    auth_mode: Option<Value>,
    tls_verify: Option<Value>,
    ca_file: Option<Value>,
    interval: Option<Value>,
    timeout: Option<Value>,
    oauth2: Option<Lenient<RawOAuth2>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawGroup {
    name: Option<Value>,
    defaults: Option<Lenient<RawDefaults>>,
    accounts: Option<Lenient<Vec<Lenient<RawAccount>>>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAccount {
    name: Option<Value>,
    server: Option<Value>,
    username: Option<Value>,
    password: Option<RawSecret>,
    password_file: Option<Value>,
    password_env: Option<Value>,
    // The per-account settings share their names and meaning with `defaults`.
    #[serde(flatten)]
    settings: RawDefaults,
}

impl RawAccount {
    fn has_password(&self) -> bool {
        self.password.is_some() || self.password_file.is_some() || self.password_env.is_some()
    }
}

impl RawConfig {
    /// Parses `text` and applies the `MAILBOX_EXPORTER__*` entries of `env`.
    pub fn parse(
        text: &str,
        format: Format,
        env: &HashMap<String, String>,
    ) -> Result<RawConfig, ConfigErrors> {
        if format == Format::Yaml {
            check_yaml(text).map_err(|message| {
                ConfigErrors::single(ConfigError::new(
                    "",
                    "",
                    format!("cannot parse the config: {message}"),
                ))
            })?;
        }
        let overrides: config::Map<String, String> =
            env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, format.file_format()))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .separator(ENV_SEPARATOR)
                    .ignore_empty(true)
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| {
                ConfigErrors::single(ConfigError::new(
                    "",
                    "",
                    sanitize_parse_error(&e.to_string()),
                ))
            })?;
        let tree: Value = built.try_deserialize().map_err(|e| {
            ConfigErrors::single(ConfigError::new(
                "",
                "",
                sanitize_parse_error(&e.to_string()),
            ))
        })?;
        // Every field is lenient, so only a non-mapping root can fail here; serde's message
        // would quote the offending value, so it is not passed on.
        serde_json::from_value(tree).map_err(|_| {
            ConfigErrors::single(ConfigError::new(
                "",
                "",
                "the top level of the config must be a mapping",
            ))
        })
    }

    /// Validates against the given environment (for `password_env`), resolving relative
    /// paths against `base_dir`.
    pub fn validate(
        self,
        base_dir: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            base_dir,
            env,
            errors: Vec::new(),
            files: Reader::new(),
            ca_files: HashMap::new(),
        };
        let config = v.config(self);
        if v.errors.is_empty() {
            return Ok(config);
        }
        if v.errors.len() > MAX_LISTED_ERRORS {
            let more = v.errors.len() - MAX_LISTED_ERRORS;
            v.errors.truncate(MAX_LISTED_ERRORS);
            v.error("", "", format!("{more} more errors not listed"));
        }
        Err(ConfigErrors(v.errors))
    }
}

/// Validates against the process environment, with relative paths against the current
/// directory.
impl TryFrom<RawConfig> for Config {
    type Error = ConfigErrors;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigErrors> {
        raw.validate(Path::new(""), &std::env::vars().collect())
    }
}

/// Parser messages may quote the offending source line (TOML does), which may hold a
/// password: keep only the lines that are not source excerpts.
fn sanitize_parse_error(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .trim_start()
                    .starts_with('|')
        })
        .filter(|line| !line.chars().all(|c| c == '^' || c == ' '))
        .collect();
    format!("cannot parse the config: {}", kept.join(": "))
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Settings that layer: each level may set any of them.
#[derive(Debug, Clone, Default)]
struct Layer {
    protocol: Option<Protocol>,
    tls: Option<TlsMode>,
    auth_mode: Option<AuthMode>,
    tls_verify: Option<bool>,
    ca_file: Option<PathBuf>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    oauth2: OAuth2Layer,
}

impl Layer {
    /// `self` where set, `base` elsewhere.
    fn over(&self, base: &Layer) -> Layer {
        Layer {
            protocol: self.protocol.or(base.protocol),
            tls: self.tls.or(base.tls),
            auth_mode: self.auth_mode.or(base.auth_mode),
            tls_verify: self.tls_verify.or(base.tls_verify),
            ca_file: self.ca_file.clone().or_else(|| base.ca_file.clone()),
            interval: self.interval.or(base.interval),
            timeout: self.timeout.or(base.timeout),
            oauth2: self.oauth2.over(&base.oauth2),
        }
    }

    fn sets_timing(&self) -> bool {
        self.interval.is_some() || self.timeout.is_some()
    }
}

struct Validator<'a> {
    base_dir: &'a Path,
    env: &'a HashMap<String, String>,
    errors: Vec<ConfigError>,
    /// Reads password and CA files under a deadline.
    files: Reader,
    /// Each CA file is read and parsed once, however many accounts name it.
    ca_files: HashMap<PathBuf, Result<(), String>>,
}

impl Validator<'_> {
    fn error(&mut self, location: &str, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::new(location, field, message));
    }

    /// The value of environment variable `var`, named in `field`. When it is
    /// not set, a name that does not look like a variable is not repeated:
    /// it may be `what` (a password or secret) typed there by mistake.
    fn env_value(&mut self, location: &str, field: &str, var: &str, what: &str) -> Option<String> {
        if let Some(value) = self.env.get(var) {
            return Some(value.clone());
        }
        let message = if looks_like_variable(var) {
            format!("environment variable {var:?} is not set")
        } else {
            format!(
                "no such environment variable (the value is not repeated: it is not \
                 an upper-case variable name and may be {what})"
            )
        };
        self.error(location, field, message);
        None
    }

    fn unknown_keys(&mut self, location: &str, unknown: &Unknown, known: &[&str]) {
        for key in unknown.0.keys() {
            let mut message = format!("unknown key {}", quote(key));
            if let Some(close) = known.iter().find(|k| similar(k, key)) {
                message.push_str(&format!(" (did you mean {close:?}?)"));
            }
            self.error(location, "", message);
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        self.unknown_keys(
            "",
            &raw.unknown,
            &[
                "interval",
                "timeout",
                "concurrency",
                "per_server_concurrency",
                "failure_budget",
                "defaults",
                "groups",
                "sources",
            ],
        );
        let top = Layer {
            interval: self.duration(
                "",
                "interval",
                raw.interval.as_ref(),
                MIN_INTERVAL,
                MAX_INTERVAL,
            ),
            timeout: self.duration(
                "",
                "timeout",
                raw.timeout.as_ref(),
                MIN_TIMEOUT,
                MAX_TIMEOUT,
            ),
            ..Layer::default()
        };
        let concurrency = self
            .count("", "concurrency", raw.concurrency.as_ref(), MAX_CONCURRENCY)
            .unwrap_or(DEFAULT_CONCURRENCY);
        let per_server_concurrency = self
            .count(
                "",
                "per_server_concurrency",
                raw.per_server_concurrency.as_ref(),
                MAX_PER_SERVER_CONCURRENCY,
            )
            .unwrap_or(DEFAULT_PER_SERVER_CONCURRENCY);
        let failure_budget = self.failure_budget(raw.failure_budget.as_ref());

        let builtin = Layer {
            protocol: Some(Protocol::Pop3),
            tls: Some(TlsMode::Implicit),
            auth_mode: Some(AuthMode::Best),
            tls_verify: Some(true),
            ca_file: None,
            interval: Some(DEFAULT_INTERVAL),
            timeout: Some(DEFAULT_TIMEOUT),
            oauth2: OAuth2Layer::default(),
        };
        let defaults = self.defaults("defaults", raw.defaults);
        let global = defaults.over(&top).over(&builtin);
        self.timing("", &global);
        let mut config = Config {
            interval: global.interval.unwrap_or(DEFAULT_INTERVAL),
            timeout: global.timeout.unwrap_or(DEFAULT_TIMEOUT),
            concurrency,
            per_server_concurrency,
            failure_budget,
            groups: Vec::new(),
            sources: Vec::new(),
        };

        let groups = match raw.groups {
            None => Vec::new(),
            Some(Lenient::Valid(groups)) => groups,
            Some(Lenient::Invalid(v)) => {
                self.error(
                    "",
                    "groups",
                    format!("expected a list of groups, found {}", kind(&v)),
                );
                Vec::new()
            }
        };
        let mut group_names: HashMap<String, String> = HashMap::new();
        let mut account_names: HashMap<String, String> = HashMap::new();
        for (i, group) in groups.into_iter().enumerate() {
            let group = match group {
                Lenient::Valid(g) => g,
                Lenient::Invalid(v) => {
                    let location = format!("groups[{i}]");
                    self.error(
                        &location,
                        "",
                        format!("expected a mapping, found {}", kind(&v)),
                    );
                    continue;
                }
            };
            if let Some(group) = self.group(i, group, &global, &mut group_names, &mut account_names)
            {
                config.groups.push(group);
            }
        }
        config.sources = self.sources(raw.sources, &global);
        config
    }

    fn group(
        &mut self,
        index: usize,
        raw: RawGroup,
        global: &Layer,
        group_names: &mut HashMap<String, String>,
        account_names: &mut HashMap<String, String>,
    ) -> Option<Group> {
        let name = self.name(&format!("groups[{index}]"), raw.name.as_ref());
        let location = place(&format!("groups[{index}]"), name.as_deref());
        self.unknown_keys(&location, &raw.unknown, &["name", "defaults", "accounts"]);
        if let Some(name) = &name {
            if let Some(first) = group_names.get(name) {
                self.error(
                    &location,
                    "name",
                    format!("duplicate group name {name:?} (first used at {first})"),
                );
            } else {
                group_names.insert(name.clone(), format!("groups[{index}]"));
            }
        }
        let own = self.defaults(&format!("{location} / defaults"), raw.defaults);
        let layer = own.over(global);
        if own.sets_timing() {
            self.timing(&format!("{location} / defaults"), &layer);
        }

        let accounts = match raw.accounts {
            Some(Lenient::Valid(accounts)) if !accounts.is_empty() => accounts,
            Some(Lenient::Invalid(v)) => {
                self.error(
                    &location,
                    "accounts",
                    format!("expected a list of accounts, found {}", kind(&v)),
                );
                Vec::new()
            }
            _ => {
                self.error(&location, "accounts", "the group has no accounts");
                Vec::new()
            }
        };
        let mut group = Group {
            name: name.clone().unwrap_or_default(),
            accounts: Vec::new(),
        };
        for (j, account) in accounts.into_iter().enumerate() {
            let account = match account {
                Lenient::Valid(a) => a,
                Lenient::Invalid(v) => {
                    self.error(
                        &format!("{location} / accounts[{j}]"),
                        "",
                        format!("expected a mapping, found {}", kind(&v)),
                    );
                    continue;
                }
            };
            if let Some(account) =
                self.account(&location, j, &group.name, account, &layer, account_names)
            {
                group.accounts.push(Arc::new(account));
            }
        }
        name.map(|_| group)
    }

    fn account(
        &mut self,
        group_location: &str,
        index: usize,
        group: &str,
        raw: RawAccount,
        inherited: &Layer,
        account_names: &mut HashMap<String, String>,
    ) -> Option<Account> {
        let bare = format!("{group_location} / accounts[{index}]");
        let name = self.name(&bare, raw.name.as_ref());
        let location = place(&bare, name.as_deref());
        let errors_before = self.errors.len();

        self.unknown_keys(
            &location,
            &raw.settings.unknown,
            &[
                "name",
                "server",
                "username",
                "password",
                "password_file",
                "password_env",
                "protocol",
                "tls",
                "tls_verify",
                "ca_file",
                "auth_mode",
                "interval",
                "timeout",
                "oauth2",
            ],
        );
        if let Some(name) = &name {
            if let Some(first) = account_names.get(name) {
                self.error(
                    &location,
                    "name",
                    format!("duplicate account name {name:?} (first used at {first}); account names must be unique across all groups"),
                );
            } else {
                account_names.insert(name.clone(), bare.clone());
            }
        }

        let server = match raw.server.as_ref() {
            None => {
                self.error(&location, "server", "missing (host or host:port)");
                None
            }
            Some(v) => match self.string(&location, "server", v) {
                Some(s) => match parse_server(&s) {
                    Ok(server) => Some(server),
                    Err(message) => {
                        self.error(&location, "server", message);
                        None
                    }
                },
                None => None,
            },
        };
        let username = match raw.username.as_ref() {
            None => {
                self.error(&location, "username", "missing");
                None
            }
            Some(v) => self.string(&location, "username", v).and_then(|s| {
                let problem = if s.is_empty() {
                    Some("is empty")
                } else if s.contains(['\r', '\n', '\0']) {
                    Some("contains a line break or NUL")
                } else {
                    None
                };
                match problem {
                    Some(p) => {
                        self.error(&location, "username", p);
                        None
                    }
                    None => Some(s),
                }
            }),
        };
        let password = raw
            .has_password()
            .then(|| self.password(&location, &raw))
            .flatten();

        let auth_mode_set = raw.settings.auth_mode.is_some();
        let own = self.layer(&location, &raw.settings);
        let layer = own.over(inherited);
        let oauth2 = self.oauth2_settings(&location, &layer.oauth2);
        let password = match password {
            Some(password) => Some(password),
            None if raw.has_password() => None,
            // A token logs in; the password is not needed.
            None if layer.oauth2.present() => Some(Password::new("")),
            None => self.password(&location, &raw),
        };
        if own.sets_timing() {
            self.timing(&location, &layer);
        }
        let protocol = layer.protocol.unwrap_or(Protocol::Pop3);
        if protocol == Protocol::Imap && auth_mode_set {
            self.error(
                &location,
                "auth_mode",
                "IMAP accounts have no auth mode (the strongest working mechanism is picked); remove it",
            );
        }

        if self.errors.len() != errors_before {
            return None;
        }
        let (name, (host, port), username, password) = (name?, server?, username?, password?);
        let tls = layer.tls.unwrap_or(TlsMode::Implicit);
        Some(Account {
            group: group.to_string(),
            name,
            interval: layer.interval.unwrap_or(DEFAULT_INTERVAL),
            target: Target {
                protocol,
                port: port.unwrap_or_else(|| tls.default_port(protocol)),
                host,
                tls: TlsSettings {
                    mode: tls,
                    verify: layer.tls_verify.unwrap_or(true),
                    ca_file: layer.ca_file.clone(),
                },
                username,
                password,
                auth_mode: match protocol {
                    Protocol::Pop3 => layer.auth_mode.unwrap_or(AuthMode::Best),
                    Protocol::Imap => AuthMode::Best,
                },
                timeout: layer.timeout.unwrap_or(DEFAULT_TIMEOUT),
                oauth2: None,
            },
            oauth2: oauth2.map(Box::new),
            origin: Origin::File,
        })
    }

    /// Exactly one of `password`, `password_file`, `password_env`. No message here may
    /// include a password or a file's content.
    fn password(&mut self, location: &str, raw: &RawAccount) -> Option<Password> {
        let set: Vec<&str> = [
            ("password", raw.password.is_some()),
            ("password_file", raw.password_file.is_some()),
            ("password_env", raw.password_env.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, present)| present.then_some(k))
        .collect();
        match set.len() {
            0 => {
                self.error(
                    location,
                    "password",
                    "missing: set one of password_file, password_env or password",
                );
                return None;
            }
            1 => {}
            _ => {
                self.error(
                    location,
                    "password",
                    format!("{} are exclusive: set exactly one", set.join(" and ")),
                );
                return None;
            }
        }
        let (field, value) = if let Some(RawSecret(v)) = &raw.password {
            match v {
                Value::String(s) => ("password", s.clone()),
                other => {
                    self.error(
                        location,
                        "password",
                        format!("expected a string (quote it), found {}", kind(other)),
                    );
                    return None;
                }
            }
        } else if let Some(v) = &raw.password_file {
            let path = self.path(location, "password_file", v)?;
            match self.files.read(&path, MAX_PASSWORD_FILE) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A password typed here by mistake must not be repeated.
                    self.error(
                        location,
                        "password_file",
                        format!(
                            "no such file (the path is not repeated: it may be a password; \
                             relative paths are resolved against {:?})",
                            self.base_dir
                        ),
                    );
                    return None;
                }
                Err(e) => {
                    self.error(
                        location,
                        "password_file",
                        format!("cannot read {path:?}: {e}"),
                    );
                    return None;
                }
                Ok(bytes) => match String::from_utf8(bytes) {
                    Err(_) => {
                        self.error(
                            location,
                            "password_file",
                            format!("{path:?} is not UTF-8 text"),
                        );
                        return None;
                    }
                    Ok(mut text) => {
                        // Editors and `echo` add one newline; it is not part of the password.
                        if text.ends_with("\r\n") {
                            text.truncate(text.len() - 2);
                        } else if text.ends_with('\n') {
                            text.truncate(text.len() - 1);
                        }
                        ("password_file", text)
                    }
                },
            }
        } else {
            let var = self.string(location, "password_env", raw.password_env.as_ref()?)?;
            let value = self.env_value(location, "password_env", &var, "a password")?;
            ("password_env", value)
        };
        if value.is_empty() {
            self.error(location, field, "the password is empty");
            return None;
        }
        if value.contains(['\r', '\n', '\0']) {
            self.error(location, field, "the password contains a line break or NUL");
            return None;
        }
        Some(Password::new(value))
    }

    fn defaults(&mut self, location: &str, raw: Option<Lenient<RawDefaults>>) -> Layer {
        match raw {
            None => Layer::default(),
            Some(Lenient::Valid(d)) => {
                self.unknown_keys(
                    location,
                    &d.unknown,
                    &[
                        "protocol",
                        "tls",
                        "auth_mode",
                        "tls_verify",
                        "ca_file",
                        "interval",
                        "timeout",
                        "oauth2",
                    ],
                );
                self.layer(location, &d)
            }
            Some(Lenient::Invalid(v)) => {
                self.error(
                    location,
                    "",
                    format!("expected a mapping, found {}", kind(&v)),
                );
                Layer::default()
            }
        }
    }

    /// The layered settings of one level; unknown keys are the caller's business.
    fn layer(&mut self, location: &str, raw: &RawDefaults) -> Layer {
        Layer {
            protocol: raw.protocol.as_ref().and_then(|v| {
                let s = self.string(location, "protocol", v)?;
                s.parse::<Protocol>()
                    .map_err(|message| self.error(location, "protocol", requote(message, &s)))
                    .ok()
            }),
            tls: raw.tls.as_ref().and_then(|v| {
                let s = self.string(location, "tls", v)?;
                s.parse::<TlsMode>()
                    .map_err(|message| self.error(location, "tls", requote(message, &s)))
                    .ok()
            }),
            auth_mode: raw.auth_mode.as_ref().and_then(|v| {
                let s = self.string(location, "auth_mode", v)?;
                s.parse::<AuthMode>()
                    .map_err(|message| self.error(location, "auth_mode", requote(message, &s)))
                    .ok()
            }),
            tls_verify: raw
                .tls_verify
                .as_ref()
                .and_then(|v| self.boolean(location, "tls_verify", v)),
            ca_file: raw.ca_file.as_ref().and_then(|v| {
                let path = self.path(location, "ca_file", v)?;
                self.check_ca_file(&path)
                    .map_err(|message| self.error(location, "ca_file", message))
                    .ok()?;
                Some(path)
            }),
            interval: self.duration(
                location,
                "interval",
                raw.interval.as_ref(),
                MIN_INTERVAL,
                MAX_INTERVAL,
            ),
            timeout: self.duration(
                location,
                "timeout",
                raw.timeout.as_ref(),
                MIN_TIMEOUT,
                MAX_TIMEOUT,
            ),
            oauth2: self.oauth2_layer(location, raw.oauth2.as_ref()),
        }
    }

    /// The file must hold PEM certificates the prober can load.
    fn check_ca_file(&mut self, path: &Path) -> Result<(), String> {
        if let Some(checked) = self.ca_files.get(path) {
            return checked.clone();
        }
        let checked = crate::tls::load_ca_file_with(&mut self.files, path)
            .map(drop)
            .map_err(|e| e.to_string());
        self.ca_files.insert(path.to_path_buf(), checked.clone());
        checked
    }

    /// A probe that can outlast its interval would overlap the next one.
    fn timing(&mut self, location: &str, layer: &Layer) {
        if let (Some(interval), Some(timeout)) = (layer.interval, layer.timeout)
            && timeout >= interval
        {
            self.error(
                location,
                "timeout",
                format!(
                    "timeout {} must be shorter than interval {}",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            );
        }
    }

    fn name(&mut self, location: &str, value: Option<&Value>) -> Option<String> {
        match value {
            None => {
                self.error(location, "name", "missing");
                None
            }
            Some(v) => {
                let s = self.string(location, "name", v)?;
                match name_problem(&s) {
                    Some(problem) => {
                        self.error(location, "name", problem);
                        None
                    }
                    None => Some(s),
                }
            }
        }
    }

    fn string(&mut self, location: &str, field: &str, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.error(
                    location,
                    field,
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn path(&mut self, location: &str, field: &str, value: &Value) -> Option<PathBuf> {
        let s = self.string(location, field, value)?;
        if s.is_empty() {
            self.error(location, field, "is empty");
            return None;
        }
        if s.len() > MAX_PATH_BYTES || s.contains('\0') {
            self.error(
                location,
                field,
                format!("{} is not a usable path", quote(&s)),
            );
            return None;
        }
        let path = PathBuf::from(s);
        Some(if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        })
    }

    /// Booleans may come as strings: environment overrides always do.
    fn boolean(&mut self, location: &str, field: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            Value::String(s) => {
                self.error(
                    location,
                    field,
                    format!("expected true or false, found {}", quote(s)),
                );
                None
            }
            other => {
                self.error(
                    location,
                    field,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn count(
        &mut self,
        location: &str,
        field: &str,
        value: Option<&Value>,
        max: u64,
    ) -> Option<usize> {
        let n = match value? {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            None => {
                let found = match value? {
                    Value::String(s) => quote(s),
                    other => kind(other).to_string(),
                };
                self.error(
                    location,
                    field,
                    format!("expected a whole number, found {found}"),
                );
                None
            }
            Some(0) => {
                self.error(location, field, "must be at least 1");
                None
            }
            Some(n) if n > max => {
                self.error(location, field, format!("{n} is too large (at most {max})"));
                None
            }
            Some(n) => usize::try_from(n).ok(),
        }
    }

    /// `failure_budget: { failures: N, window: DURATION }`; either may be left out (the
    /// default's is used), `failures: 0` turns the budget off.
    fn failure_budget(&mut self, value: Option<&Value>) -> Option<FailureBudgetSettings> {
        const FIELD: &str = "failure_budget";
        let mut budget = DEFAULT_FAILURE_BUDGET;
        let Some(value) = value else {
            return Some(budget);
        };
        let Value::Object(map) = value else {
            self.error(
                "",
                FIELD,
                format!(
                    "expected a mapping such as {{failures: 4, window: 10m}}, found {}",
                    kind(value)
                ),
            );
            return Some(budget);
        };
        for key in map.keys() {
            if key != "failures" && key != "window" {
                let key: String = key.chars().take(40).collect();
                self.error(
                    "",
                    FIELD,
                    format!("unknown key {key:?} (expected failures, window)"),
                );
            }
        }
        if let Some(window) = self.duration(
            "",
            "failure_budget.window",
            map.get("window"),
            MIN_BUDGET_WINDOW,
            MAX_BUDGET_WINDOW,
        ) {
            budget.window = window;
        }
        let failures = match map.get("failures") {
            None => return Some(budget),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match failures {
            Some(0) => None,
            Some(1) => {
                self.error(
                    "",
                    "failure_budget.failures",
                    "1 leaves no room for a method and the aborted login after it: use 0 \
                     (no budget) or at least 2",
                );
                Some(budget)
            }
            Some(n) if n <= MAX_BUDGET_FAILURES => {
                budget.failures = u32::try_from(n).unwrap_or(u32::MAX);
                Some(budget)
            }
            Some(n) => {
                self.error(
                    "",
                    "failure_budget.failures",
                    format!("{n} is too large (at most {MAX_BUDGET_FAILURES})"),
                );
                Some(budget)
            }
            None => {
                self.error(
                    "",
                    "failure_budget.failures",
                    "expected a whole number (0 turns the budget off)",
                );
                Some(budget)
            }
        }
    }

    fn duration(
        &mut self,
        location: &str,
        field: &str,
        value: Option<&Value>,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let s = match value? {
            Value::String(s) => s.clone(),
            other => {
                self.error(
                    location,
                    field,
                    format!(
                        "expected a duration with a unit such as \"30s\" or \"5m\", found {}",
                        kind(other)
                    ),
                );
                return None;
            }
        };
        let d = match humantime::parse_duration(s.trim()) {
            Ok(d) => d,
            Err(e) => {
                // The parser's message quotes the unit, which may be anything.
                let why = e.to_string();
                let why = if why.len() <= 2 * limits::QUOTE_CHARS + 60 {
                    why
                } else {
                    "expected a number and a unit such as \"30s\" or \"5m\"".into()
                };
                self.error(
                    location,
                    field,
                    format!("bad duration {}: {why}", quote(&s)),
                );
                return None;
            }
        };
        if d.is_zero() {
            self.error(location, field, "must be greater than zero");
            None
        } else if d < min || d > max {
            self.error(
                location,
                field,
                format!(
                    "{} is out of range ({} to {})",
                    quote(&s),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            None
        } else {
            Some(d)
        }
    }
}

/// A parser's `message` with its full quote of `value` cut down by [`quote`].
fn requote(message: String, value: &str) -> String {
    message.replace(&format!("{value:?}"), &quote(value))
}

/// `groups[0] "support"`, or just `groups[0]` when the entry has no usable name.
fn place(bare: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{bare} {name:?}"),
        None => bare.to_string(),
    }
}

/// The JSON kind of a value, for type errors that must not echo the value itself.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Whether a `password_env` value is shaped like a conventional variable name (`SUPPORT_PW`),
/// and so safe to repeat in an error.
fn looks_like_variable(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `unknown` looks like a typo of `known`: equal ignoring case, `-`/`_`, or one edit
/// apart.
fn similar(known: &str, unknown: &str) -> bool {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let (a, b) = (norm(known), norm(unknown));
    if a == b {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // One edit changes the length by one at most; this also keeps a huge key cheap.
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()] <= 1
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` into a host (brackets removed) and port.
pub(crate) fn parse_server(s: &str) -> Result<(String, Option<u16>), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} contains whitespace or a control character",
            quote(s)
        ));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{}: missing ']' after the IPv6 address", quote(s)))?;
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "{}: {} is not an IPv6 address",
                quote(s),
                quote(inner)
            ));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("{}: expected ':port' after ']'", quote(s)))?,
            ),
        };
        (inner, port)
    } else {
        match s.matches(':').count() {
            0 => (s, None),
            1 => {
                let (host, port) = s.split_once(':').unwrap_or((s, ""));
                (host, Some(port))
            }
            _ => {
                return Err(format!(
                    "{}: write IPv6 addresses in brackets, e.g. \"[::1]:995\"",
                    quote(s)
                ));
            }
        }
    };
    if host.is_empty() {
        return Err(format!("{}: the host is empty", quote(s)));
    }
    if host.len() > MAX_HOST_BYTES {
        return Err(format!(
            "{}: the host is longer than {MAX_HOST_BYTES} bytes",
            quote(s)
        ));
    }
    if !s.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "{}: {} is not a host name or address",
            quote(s),
            quote(host)
        ));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(format!(
                    "{}: bad port {}, expected 1-65535",
                    quote(s),
                    quote(p)
                ));
            }
        },
    };
    Ok((host.to_string(), port))
}

/// Largest configuration file read: 10,000 accounts take about 2 MiB.
pub const MAX_CONFIG_FILE: u64 = 16 * 1024 * 1024;
/// Longest DNS name (RFC 1035).
const MAX_HOST_BYTES: usize = 253;
/// Longest path accepted (Linux's PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;
/// Largest password file read: a password, not a document.
const MAX_PASSWORD_FILE: u64 = 64 * 1024;

#[cfg(test)]
mod tests;
