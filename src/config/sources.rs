//! The `sources` list: where accounts come from besides the static `groups`. One kind so far,
//! `vicidial`, which reads VICIdial's `vicidial_email_accounts` table.
//!
//! The database password (or the DSN that holds it) is a secret: no message here repeats it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{
    DEFAULT_TIMEOUT, Layer, Lenient, RawDefaults, RawSecret, Unknown, Validator, kind, parse_server,
};
use crate::secret::Password;
use crate::verdict::TlsMode;

/// How often a source is read unless configured: a changed password shows within a minute.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);
/// Deadline of one read (connect, query, rows) unless configured.
pub const DEFAULT_SOURCE_TIMEOUT: Duration = Duration::from_secs(10);
/// The `source` label of a VICIdial source unless `name` sets one.
pub const DEFAULT_VICIDIAL_NAME: &str = "vicidial";
/// VICIdial's MySQL/MariaDB port and database name.
pub const DEFAULT_MYSQL_PORT: u16 = 3306;
pub const DEFAULT_VICIDIAL_DATABASE: &str = "asterisk";
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
const MIN_SOURCE_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_SOURCE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A DSN file holds one URL.
const MAX_DSN_FILE: u64 = 64 * 1024;

const VICIDIAL_KEYS: &[&str] = &[
    "name",
    "dsn_file",
    "host",
    "port",
    "socket",
    "database",
    "user",
    "password",
    "password_file",
    "password_env",
    "refresh",
    "timeout",
    "in_groups",
    "defaults",
    "overrides",
];

/// One validated account source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSettings {
    Vicidial(VicidialSettings),
}

impl SourceSettings {
    /// The `source` label value, unique among the sources.
    pub fn name(&self) -> &str {
        match self {
            SourceSettings::Vicidial(v) => &v.name,
        }
    }

    /// How often the source is read.
    pub fn refresh(&self) -> Duration {
        match self {
            SourceSettings::Vicidial(v) => v.refresh,
        }
    }
}

/// A `vicidial:` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VicidialSettings {
    pub name: String,
    pub database: Database,
    pub refresh: Duration,
    /// Deadline of one read: connect, query and every row.
    pub timeout: Duration,
    /// Only rows whose `group_id` is one of these; `None`: every in-group.
    pub in_groups: Option<Vec<String>>,
    /// How the servers are reached unless `overrides` names the server.
    pub defaults: Reach,
    /// By `email_account_server`, lower-cased.
    pub overrides: BTreeMap<String, Reach>,
}

impl VicidialSettings {
    /// How `server` (an `email_account_server` value) is reached.
    pub fn reach(&self, server: &str) -> &Reach {
        self.overrides
            .get(&server.trim().to_ascii_lowercase())
            .unwrap_or(&self.defaults)
    }
}

/// How a source's accounts reach their server, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub tls: TlsMode,
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
    /// The shortest probe interval; a row may ask for a longer one.
    pub interval: Duration,
    pub timeout: Duration,
}

/// Where the database is and how to log in to it. `Debug` shows neither the DSN nor the
/// password: both are [`Password`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A `mysql://user:password@host:port/database` URL, from `dsn_file`; checked to parse.
    Url(Password),
    Parts {
        host: String,
        port: u16,
        socket: Option<PathBuf>,
        database: String,
        user: String,
        password: Option<Password>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSource {
    vicidial: Option<Lenient<RawVicidial>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawVicidial {
    name: Option<Value>,
    dsn_file: Option<Value>,
    host: Option<Value>,
    port: Option<Value>,
    socket: Option<Value>,
    database: Option<Value>,
    user: Option<Value>,
    password: Option<RawSecret>,
    password_file: Option<Value>,
    password_env: Option<Value>,
    refresh: Option<Value>,
    timeout: Option<Value>,
    in_groups: Option<Value>,
    defaults: Option<Lenient<RawDefaults>>,
    overrides: Option<Lenient<BTreeMap<String, Lenient<RawDefaults>>>>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl Validator<'_> {
    /// Every source of the `sources` list; `global` is what accounts inherit.
    pub(super) fn sources(
        &mut self,
        raw: Option<Lenient<Vec<Lenient<RawSource>>>>,
        global: &Layer,
    ) -> Vec<SourceSettings> {
        let list = match raw {
            None => return Vec::new(),
            Some(Lenient::Valid(list)) => list,
            Some(Lenient::Invalid(v)) => {
                self.error(
                    "",
                    "sources",
                    format!("expected a list of sources, found {}", kind(&v)),
                );
                return Vec::new();
            }
        };
        let mut names: HashMap<String, String> = HashMap::new();
        let mut out = Vec::new();
        for (i, source) in list.into_iter().enumerate() {
            let location = format!("sources[{i}]");
            let source = match source {
                Lenient::Valid(s) => s,
                Lenient::Invalid(v) => {
                    self.error(
                        &location,
                        "",
                        format!(
                            "expected a mapping such as {{vicidial: {{...}}}}, found {}",
                            kind(&v)
                        ),
                    );
                    continue;
                }
            };
            self.unknown_keys(&location, &source.unknown, &["vicidial"]);
            let raw = match source.vicidial {
                Some(Lenient::Valid(raw)) => raw,
                Some(Lenient::Invalid(v)) => {
                    self.error(
                        &location,
                        "vicidial",
                        format!("expected a mapping, found {}", kind(&v)),
                    );
                    continue;
                }
                None => {
                    if source.unknown.0.is_empty() {
                        self.error(&location, "", "names no source kind (vicidial)");
                    }
                    continue;
                }
            };
            let location = format!("{location} / vicidial");
            let Some(settings) = self.vicidial(&location, raw, global) else {
                continue;
            };
            if let Some(first) = names.get(&settings.name) {
                self.error(
                    &location,
                    "name",
                    format!(
                        "duplicate source name {:?} (first used at {first}); give each source its own name",
                        settings.name
                    ),
                );
                continue;
            }
            names.insert(settings.name.clone(), location);
            out.push(SourceSettings::Vicidial(settings));
        }
        out
    }

    fn vicidial(
        &mut self,
        location: &str,
        raw: RawVicidial,
        global: &Layer,
    ) -> Option<VicidialSettings> {
        let errors_before = self.errors.len();
        self.unknown_keys(location, &raw.unknown, VICIDIAL_KEYS);
        let name = match raw.name.as_ref() {
            None => Some(DEFAULT_VICIDIAL_NAME.to_string()),
            Some(v) => self.name(location, Some(v)),
        };
        if name.as_deref() == Some(crate::config::Origin::File.source()) {
            self.error(
                location,
                "name",
                "\"file\" names the config file's accounts in the source label; choose another",
            );
        }
        let database = self.database(location, &raw);
        let refresh = self
            .duration(
                location,
                "refresh",
                raw.refresh.as_ref(),
                MIN_REFRESH,
                MAX_REFRESH,
            )
            .unwrap_or(DEFAULT_REFRESH);
        let timeout = self
            .duration(
                location,
                "timeout",
                raw.timeout.as_ref(),
                MIN_SOURCE_TIMEOUT,
                MAX_SOURCE_TIMEOUT,
            )
            .unwrap_or(DEFAULT_SOURCE_TIMEOUT);
        let in_groups = raw
            .in_groups
            .as_ref()
            .and_then(|v| self.in_groups(location, v));

        // Unless the source says otherwise, VICIdial's own way: implicit TLS on 995/993.
        let base = Layer {
            tls: Some(TlsMode::Implicit),
            ..Layer::default()
        }
        .over(global);
        let defaults_location = format!("{location} / defaults");
        let own = self.reach_layer(&defaults_location, raw.defaults);
        let defaults = own.over(&base);
        self.timing(&defaults_location, &defaults);
        let mut overrides = BTreeMap::new();
        match raw.overrides {
            None => {}
            Some(Lenient::Invalid(v)) => self.error(
                location,
                "overrides",
                format!(
                    "expected a mapping of server names to settings, found {}",
                    kind(&v)
                ),
            ),
            Some(Lenient::Valid(map)) => {
                for (server, raw) in map {
                    let at = format!("{location} / overrides / {}", super::quote(&server));
                    if let Err(message) = parse_server(server.trim()) {
                        self.error(&at, "", message);
                        continue;
                    }
                    let layer = self.reach_layer(&at, Some(raw)).over(&defaults);
                    self.timing(&at, &layer);
                    overrides.insert(server.trim().to_ascii_lowercase(), reach(&layer));
                }
            }
        }
        if self.errors.len() != errors_before {
            return None;
        }
        Some(VicidialSettings {
            name: name?,
            database: database?,
            refresh,
            timeout,
            in_groups,
            defaults: reach(&defaults),
            overrides,
        })
    }

    /// A source's `defaults` or one of its `overrides`: the reach keys only.
    fn reach_layer(&mut self, location: &str, raw: Option<Lenient<RawDefaults>>) -> Layer {
        if let Some(Lenient::Valid(d)) = &raw {
            for (key, present) in [
                ("protocol", d.protocol.is_some()),
                ("auth_mode", d.auth_mode.is_some()),
                ("oauth2", d.oauth2.is_some()),
            ] {
                if present {
                    self.error(
                        location,
                        key,
                        "comes from the VICIdial table (protocol, pop3_auth_mode) and \
                         cannot be set here",
                    );
                }
            }
        }
        // Every other key of `defaults` is a reach key, so unknown keys are the same.
        self.defaults(location, raw)
    }

    fn in_groups(&mut self, location: &str, value: &Value) -> Option<Vec<String>> {
        let Value::Array(items) = value else {
            self.error(
                location,
                "in_groups",
                format!("expected a list of in-group ids, found {}", kind(value)),
            );
            return None;
        };
        let mut groups = Vec::with_capacity(items.len());
        for item in items {
            let group = self.string(location, "in_groups", item)?;
            if group.is_empty() {
                self.error(location, "in_groups", "holds an empty in-group id");
                return None;
            }
            groups.push(group);
        }
        if groups.is_empty() {
            self.error(
                location,
                "in_groups",
                "is empty, so nothing would be probed: remove it to take every in-group",
            );
            return None;
        }
        Some(groups)
    }

    /// `dsn_file`, or the parts. No message repeats the DSN or the password.
    fn database(&mut self, location: &str, raw: &RawVicidial) -> Option<Database> {
        let parts_set: Vec<&str> = [
            ("host", raw.host.is_some()),
            ("port", raw.port.is_some()),
            ("socket", raw.socket.is_some()),
            ("database", raw.database.is_some()),
            ("user", raw.user.is_some()),
            ("password", raw.password.is_some()),
            ("password_file", raw.password_file.is_some()),
            ("password_env", raw.password_env.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if let Some(dsn_file) = &raw.dsn_file {
            if !parts_set.is_empty() {
                self.error(
                    location,
                    "dsn_file",
                    format!(
                        "the DSN holds the connection; remove {} or dsn_file",
                        parts_set.join(", ")
                    ),
                );
                return None;
            }
            let path = self.path(location, "dsn_file", dsn_file)?;
            let text = match self.files.read(&path, MAX_DSN_FILE) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(_) => {
                        self.error(location, "dsn_file", format!("{path:?} is not UTF-8 text"));
                        return None;
                    }
                },
                Err(e) => {
                    self.error(location, "dsn_file", format!("cannot read {path:?}: {e}"));
                    return None;
                }
            };
            let dsn = text.trim();
            if let Err(why) = crate::source::vicidial::check_dsn(dsn) {
                self.error(location, "dsn_file", format!("{path:?}: {why}"));
                return None;
            }
            return Some(Database::Url(Password::new(dsn)));
        }
        let user = match raw.user.as_ref() {
            Some(v) => self.string(location, "user", v)?,
            None => {
                self.error(
                    location,
                    "user",
                    "missing: set dsn_file, or user (with host, socket, database, password_file \
                     as needed)",
                );
                return None;
            }
        };
        let host = match raw.host.as_ref() {
            Some(v) => self.string(location, "host", v)?,
            None => "localhost".to_string(),
        };
        let port = match raw.port.as_ref() {
            Some(v) => u16::try_from(self.count(location, "port", Some(v), 65535)?).ok()?,
            None => DEFAULT_MYSQL_PORT,
        };
        let socket = match raw.socket.as_ref() {
            Some(v) => Some(self.path(location, "socket", v)?),
            None => None,
        };
        let database = match raw.database.as_ref() {
            Some(v) => self.string(location, "database", v)?,
            None => DEFAULT_VICIDIAL_DATABASE.to_string(),
        };
        // Shared with the OAuth2 secrets: at most one of the three, never repeated.
        let password = match (&raw.password, &raw.password_file, &raw.password_env) {
            (None, None, None) => None,
            (inline, file, env) => {
                let (secret, _) = self.secret(
                    location,
                    "password",
                    inline.as_ref(),
                    file.as_ref(),
                    env.as_ref(),
                )?;
                Some(Password::new(secret.expose()))
            }
        };
        Some(Database::Parts {
            host,
            port,
            socket,
            database,
            user,
            password,
        })
    }
}

fn reach(layer: &Layer) -> Reach {
    Reach {
        tls: layer.tls.unwrap_or(TlsMode::Implicit),
        tls_verify: layer.tls_verify.unwrap_or(true),
        ca_file: layer.ca_file.clone(),
        interval: layer.interval.unwrap_or(super::DEFAULT_INTERVAL),
        timeout: layer.timeout.unwrap_or(DEFAULT_TIMEOUT),
    }
}

#[cfg(test)]
mod tests;
