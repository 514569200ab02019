//! VICIdial's `vicidial_email_accounts` table as an account source: the query, the checks on
//! what the database answers, and the mapping of one row to one account.
//!
//! Only active inbound POP3 and IMAP rows are read. The database user needs SELECT on this
//! one table and nothing else.

use std::time::Duration;

use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Value};

use crate::config::{Account, Database, Origin, VicidialRow, VicidialSettings};
use crate::probe::{Target, TlsSettings};
use crate::secret::Password;
use crate::verdict::{AuthMode, Protocol};

/// Rows one read may return; more is not a contact centre's mail setup.
pub const MAX_ROWS: usize = 100_000;
/// The largest packet the client accepts: a row of this table is well under 2 KiB.
const MAX_PACKET: usize = 1024 * 1024;

/// Columns read, in this order.
const COLUMNS: [(&str, Kind); 10] = [
    ("email_account_id", Kind::Text),
    ("email_account_name", Kind::Text),
    ("user_group", Kind::Text),
    ("protocol", Kind::Text),
    ("email_account_server", Kind::Text),
    ("email_account_user", Kind::Text),
    ("email_account_pass", Kind::Text),
    ("pop3_auth_mode", Kind::Text),
    ("email_frequency_check_mins", Kind::Integer),
    ("group_id", Kind::Text),
];

/// One more than [`MAX_ROWS`], so that too many rows is told apart from exactly enough.
const QUERY: &str = "SELECT email_account_id, email_account_name, user_group, protocol, \
     email_account_server, email_account_user, email_account_pass, pop3_auth_mode, \
     email_frequency_check_mins, group_id \
     FROM vicidial_email_accounts \
     WHERE active = 'Y' AND email_account_type = 'INBOUND' AND protocol IN ('POP3', 'IMAP') \
     ORDER BY email_account_id LIMIT 100001";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
}

/// One row as read, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub email_account_id: String,
    pub email_account_name: Option<String>,
    pub user_group: Option<String>,
    pub protocol: Option<String>,
    pub email_account_server: Option<String>,
    pub email_account_user: Option<String>,
    pub email_account_pass: Option<Password>,
    pub pop3_auth_mode: Option<String>,
    pub email_frequency_check_mins: Option<u64>,
    pub group_id: Option<String>,
}

/// Checks that `dsn` is a URL the client takes, without repeating any of it.
pub fn check_dsn(dsn: &str) -> Result<(), String> {
    if dsn.is_empty() {
        return Err("the file is empty".into());
    }
    Opts::from_url(dsn).map(drop).map_err(|e| {
        use mysql_async::UrlError;
        let why = match e {
            UrlError::UnsupportedScheme { .. } => "the scheme must be mysql://".to_string(),
            UrlError::UnknownParameter { param } => {
                format!("unknown parameter {}", crate::config::quote(&param))
            }
            UrlError::InvalidParamValue { param, .. } => {
                format!("bad value for parameter {}", crate::config::quote(&param))
            }
            UrlError::FeatureRequired { param, .. } => format!(
                "parameter {} is not supported",
                crate::config::quote(&param)
            ),
            _ => "not a valid URL".to_string(),
        };
        format!("{why} (expected mysql://USER:PASSWORD@HOST:PORT/DATABASE)")
    })
}

/// The client's options for `database`.
fn opts(database: &Database) -> Result<Opts, String> {
    let builder = match database {
        Database::Url(dsn) => OptsBuilder::from_opts(
            Opts::from_url(dsn.expose()).map_err(|_| "the DSN is not a valid URL".to_string())?,
        ),
        Database::Parts {
            host,
            port,
            socket,
            database,
            user,
            password,
        } => OptsBuilder::default()
            .ip_or_hostname(host.clone())
            .tcp_port(*port)
            .socket(socket.as_ref().map(|s| s.to_string_lossy().into_owned()))
            .db_name(Some(database.clone()))
            .user(Some(user.clone()))
            .pass(password.as_ref().map(|p| p.expose().to_string())),
    };
    Ok(builder
        .max_allowed_packet(Some(MAX_PACKET))
        .stmt_cache_size(0)
        .into())
}

/// Reads every active inbound POP3/IMAP row, within `settings.timeout`.
pub async fn read(settings: &VicidialSettings) -> Result<Vec<Row>, String> {
    let opts = opts(&settings.database)?;
    // To keep out of messages.
    let password = opts.pass().map(str::to_string);
    let read = async {
        let mut conn = Conn::new(opts)
            .await
            .map_err(|e| format!("cannot connect to the database: {}", describe(&e)))?;
        let rows = query(&mut conn).await;
        // The rows are read whatever the goodbye does.
        let _ = conn.disconnect().await;
        rows
    };
    let outcome = match tokio::time::timeout(settings.timeout, read).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "no answer within {} (timeout)",
            humantime::format_duration(settings.timeout)
        )),
    };
    outcome.map_err(|message| redact(message, password))
}

async fn query(conn: &mut Conn) -> Result<Vec<Row>, String> {
    let mut result = conn
        .query_iter(QUERY)
        .await
        .map_err(|e| format!("cannot read vicidial_email_accounts: {}", describe(&e)))?;
    check_columns(result.columns_ref())?;
    let mut rows = Vec::new();
    while let Some(row) = result
        .next()
        .await
        .map_err(|e| format!("cannot read vicidial_email_accounts: {}", describe(&e)))?
    {
        if rows.len() == MAX_ROWS {
            return Err(format!(
                "more than {MAX_ROWS} active inbound rows: refusing to probe that many"
            ));
        }
        rows.push(row_of(row.unwrap())?);
    }
    Ok(rows)
}

/// The client's error in a few words: the server's own message, or the I/O error without
/// the client's doubled prefixes.
fn describe(e: &mysql_async::Error) -> String {
    use mysql_async::{Error, IoError};
    match e {
        Error::Io(IoError::Io(io)) => io.to_string(),
        Error::Io(IoError::Tls(tls)) => format!("TLS: {tls}"),
        Error::Server(server) => format!("{} (error {})", server.message, server.code),
        Error::Driver(driver) => driver.to_string(),
        other => other.to_string(),
    }
}

/// The columns must have the types VICIdial gives them: text, and a whole number of minutes.
fn check_columns(columns: &[mysql_async::Column]) -> Result<(), String> {
    if columns.len() != COLUMNS.len() {
        return Err(format!(
            "the query returned {} columns, expected {}",
            columns.len(),
            COLUMNS.len()
        ));
    }
    for (column, (name, kind)) in columns.iter().zip(COLUMNS) {
        let found = column.column_type();
        let fits = match kind {
            Kind::Text => matches!(
                found,
                ColumnType::MYSQL_TYPE_VARCHAR
                    | ColumnType::MYSQL_TYPE_VAR_STRING
                    | ColumnType::MYSQL_TYPE_STRING
                    | ColumnType::MYSQL_TYPE_ENUM
                    | ColumnType::MYSQL_TYPE_TINY_BLOB
                    | ColumnType::MYSQL_TYPE_BLOB
                    | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
                    | ColumnType::MYSQL_TYPE_LONG_BLOB
            ),
            Kind::Integer => matches!(
                found,
                ColumnType::MYSQL_TYPE_TINY
                    | ColumnType::MYSQL_TYPE_SHORT
                    | ColumnType::MYSQL_TYPE_INT24
                    | ColumnType::MYSQL_TYPE_LONG
                    | ColumnType::MYSQL_TYPE_LONGLONG
            ),
        };
        if !fits {
            return Err(format!(
                "column {name} has type {}, expected {}",
                type_name(found),
                match kind {
                    Kind::Text => "text (VARCHAR or ENUM)",
                    Kind::Integer => "a whole number (TINYINT)",
                }
            ));
        }
    }
    Ok(())
}

fn type_name(t: ColumnType) -> String {
    format!("{t:?}")
        .trim_start_matches("MYSQL_TYPE_")
        .to_string()
}

fn row_of(values: Vec<Value>) -> Result<Row, String> {
    let mut values = values.into_iter();
    let mut text = |name: &str| -> Result<Option<String>, String> {
        match values.next() {
            Some(Value::NULL) | None => Ok(None),
            Some(Value::Bytes(bytes)) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| format!("column {name} holds a value that is not UTF-8 text")),
            Some(_) => Err(format!("column {name} holds a value that is not text")),
        }
    };
    let email_account_id = text("email_account_id")?.unwrap_or_default();
    let email_account_name = text("email_account_name")?;
    let user_group = text("user_group")?;
    let protocol = text("protocol")?;
    let email_account_server = text("email_account_server")?;
    let email_account_user = text("email_account_user")?;
    let email_account_pass = text("email_account_pass")?.map(Password::new);
    let pop3_auth_mode = text("pop3_auth_mode")?;
    let email_frequency_check_mins = match text("email_frequency_check_mins")? {
        None => None,
        Some(s) => Some(s.trim().parse::<u64>().map_err(|_| {
            "column email_frequency_check_mins holds a value that is not a whole number".to_string()
        })?),
    };
    let group_id = text("group_id")?;
    Ok(Row {
        email_account_id,
        email_account_name,
        user_group,
        protocol,
        email_account_server,
        email_account_user,
        email_account_pass,
        pop3_auth_mode,
        email_frequency_check_mins,
        group_id,
    })
}

/// A message without `password` in it: the client's and the server's messages do not quote
/// it, but nothing relies on that.
fn redact(message: String, password: Option<String>) -> String {
    match password {
        Some(p) if !p.is_empty() && message.contains(&p) => message.replace(&p, "***"),
        _ => message,
    }
}

/// The account of `row`, or why the row is skipped (never quoting its password).
pub fn account(settings: &VicidialSettings, row: &Row) -> Result<Account, String> {
    let name = row.email_account_id.trim();
    if let Some(problem) = crate::config::name_problem(name) {
        return Err(format!("email_account_id {problem}"));
    }
    let group = match row.group_id.as_deref().map(str::trim) {
        None | Some("") => return Err("group_id (the in-group) is empty".into()),
        Some(g) => match crate::config::name_problem(g) {
            Some(problem) => return Err(format!("group_id {problem}")),
            None => g.to_string(),
        },
    };
    let protocol = match row.protocol.as_deref() {
        Some("POP3") => Protocol::Pop3,
        Some("IMAP") => Protocol::Imap,
        Some(other) => {
            return Err(format!(
                "protocol {} is neither POP3 nor IMAP",
                crate::config::quote(other)
            ));
        }
        None => return Err("protocol is empty".into()),
    };
    let server = row.email_account_server.as_deref().unwrap_or("").trim();
    if server.is_empty() {
        return Err("email_account_server is empty".into());
    }
    let (host, port) = crate::config::parse_server(server)
        .map_err(|why| format!("email_account_server: {why}"))?;
    let username = row.email_account_user.as_deref().unwrap_or("");
    if username.is_empty() {
        return Err("email_account_user is empty".into());
    }
    if username.contains(['\r', '\n', '\0']) {
        return Err("email_account_user contains a line break or NUL".into());
    }
    let password = match &row.email_account_pass {
        Some(p) if !p.expose().is_empty() => p.clone(),
        _ => return Err("email_account_pass is empty".into()),
    };
    if password.expose().contains(['\r', '\n', '\0']) {
        return Err("email_account_pass contains a line break or NUL".into());
    }
    let auth_mode = match protocol {
        // VICIdial's column is "Auth Mode for POP3 protocol only".
        Protocol::Imap => AuthMode::Best,
        Protocol::Pop3 => match row.pop3_auth_mode.as_deref() {
            None => AuthMode::Best,
            Some(mode) => match mode {
                "BEST" | "PASS" | "APOP" | "CRAM-MD5" => mode
                    .parse::<AuthMode>()
                    .map_err(|_| "pop3_auth_mode is not usable".to_string())?,
                other => {
                    return Err(format!(
                        "pop3_auth_mode {} is none of BEST, PASS, APOP, CRAM-MD5",
                        crate::config::quote(other)
                    ));
                }
            },
        },
    };
    let reach = settings.reach(server);
    let frequency = row.email_frequency_check_mins.unwrap_or(0).min(255) as u8;
    Ok(Account {
        group,
        name: name.to_string(),
        interval: interval(reach.interval, frequency),
        target: Target {
            protocol,
            port: port.unwrap_or_else(|| reach.tls.default_port(protocol)),
            host,
            tls: TlsSettings {
                mode: reach.tls,
                verify: reach.tls_verify,
                ca_file: reach.ca_file.clone(),
            },
            username: username.to_string(),
            password,
            auth_mode,
            timeout: reach.timeout,
            oauth2: None,
        },
        oauth2: None,
        origin: Origin::Vicidial(VicidialRow {
            source: settings.name.clone(),
            email_account_name: label_text(row.email_account_name.as_deref()),
            user_group: label_text(row.user_group.as_deref()),
            frequency_check_mins: frequency,
        }),
    })
}

/// The probe interval of a row: never shorter than VICIdial's own check of the mailbox, so
/// the exporter at most doubles the logins the provider sees.
pub fn interval(configured: Duration, frequency_check_mins: u8) -> Duration {
    configured.max(Duration::from_secs(60 * u64::from(frequency_check_mins)))
}

/// A label value from a free-text column: control characters dropped, at most 100
/// characters (VICIdial's own limit for these columns).
fn label_text(value: Option<&str>) -> String {
    value
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

/// `advice` with, where it names a setting, the VICIdial screen field that holds it.
pub fn advise(account: &str, advice: String) -> String {
    let mut extra = Vec::new();
    if let Some(mode) = pinned_mode(&advice) {
        extra.push(format!(
            "in VICIdial: Admin > Email Accounts > {account}, set Auth Mode to {mode}"
        ));
    }
    if advice.contains("check the username and password") {
        extra.push(format!(
            "in VICIdial: Admin > Email Accounts > {account}, check Email Account User and \
             Email Account Password"
        ));
    }
    if advice.contains("tls: starttls") || advice.contains("tls: implicit") {
        extra.push(
            "VICIdial's table has no TLS setting: set tls for this server under the vicidial \
             source's overrides"
                .to_string(),
        );
    }
    if extra.is_empty() {
        advice
    } else {
        format!("{advice}; {}", extra.join("; "))
    }
}

/// The POP3 auth mode the advice asks to pin: `pin auth_mode: PASS` and the like.
fn pinned_mode(advice: &str) -> Option<&'static str> {
    let at = advice.find("pin auth_mode: ")? + "pin auth_mode: ".len();
    let rest = &advice[at..];
    ["CRAM-MD5", "APOP", "PASS", "BEST"]
        .into_iter()
        .find(|mode| rest.starts_with(mode))
}

#[cfg(test)]
mod tests;
