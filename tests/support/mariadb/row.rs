//! Rows of VICIdial's `vicidial_email_accounts` for the tests, and SQL string literals.

use super::TABLE;

/// A row of `vicidial_email_accounts`, holding the columns the exporter reads; the others
/// take VICIdial's defaults. `None` inserts NULL.
///
/// [`Row::new`] gives an active INBOUND IMAP account in no in-group; the builder methods set
/// the rest, and the fields are public for values the builders do not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub email_account_id: String,
    pub email_account_name: Option<String>,
    pub user_group: Option<String>,
    pub protocol: Option<String>,
    pub email_account_server: Option<String>,
    pub email_account_user: Option<String>,
    pub email_account_pass: Option<String>,
    pub pop3_auth_mode: Option<String>,
    pub active: Option<String>,
    pub email_frequency_check_mins: Option<u8>,
    pub group_id: Option<String>,
    pub email_account_type: Option<String>,
}

impl Row {
    pub fn new(email_account_id: &str) -> Self {
        Row {
            email_account_id: email_account_id.to_owned(),
            email_account_name: Some(format!("{email_account_id} mailbox")),
            user_group: Some("---ALL---".to_owned()),
            protocol: Some("IMAP".to_owned()),
            email_account_server: None,
            email_account_user: None,
            email_account_pass: None,
            pop3_auth_mode: Some("BEST".to_owned()),
            active: Some("Y".to_owned()),
            email_frequency_check_mins: Some(5),
            group_id: None,
            email_account_type: Some("INBOUND".to_owned()),
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.email_account_name = Some(name.to_owned());
        self
    }

    pub fn user_group(mut self, user_group: &str) -> Self {
        self.user_group = Some(user_group.to_owned());
        self
    }

    /// `POP3`, `IMAP` or `SMTP`.
    pub fn protocol(mut self, protocol: &str) -> Self {
        self.protocol = Some(protocol.to_owned());
        self
    }

    /// `email_account_server`: a host name or IP, without port (VICIdial has no port column).
    pub fn server(mut self, server: &str) -> Self {
        self.email_account_server = Some(server.to_owned());
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.email_account_user = Some(user.to_owned());
        self
    }

    pub fn password(mut self, password: &str) -> Self {
        self.email_account_pass = Some(password.to_owned());
        self
    }

    /// `BEST`, `PASS`, `APOP` or `CRAM-MD5`.
    pub fn auth_mode(mut self, mode: &str) -> Self {
        self.pop3_auth_mode = Some(mode.to_owned());
        self
    }

    /// `active` = `Y` or `N`.
    pub fn active(mut self, active: bool) -> Self {
        self.active = Some(if active { "Y" } else { "N" }.to_owned());
        self
    }

    pub fn frequency_mins(mut self, minutes: u8) -> Self {
        self.email_frequency_check_mins = Some(minutes);
        self
    }

    /// `group_id`: the in-group the mailbox feeds.
    pub fn group(mut self, group_id: &str) -> Self {
        self.group_id = Some(group_id.to_owned());
        self
    }

    /// `INBOUND` or `OUTBOUND`.
    pub fn account_type(mut self, account_type: &str) -> Self {
        self.email_account_type = Some(account_type.to_owned());
        self
    }

    /// `VERB INTO vicidial_email_accounts (...) VALUES (...);` with every value escaped.
    pub fn sql(&self, verb: &str) -> String {
        let text = |value: &Option<String>| value.as_deref().map_or("NULL".to_owned(), quote);
        let columns = [
            ("email_account_id", quote(&self.email_account_id)),
            ("email_account_name", text(&self.email_account_name)),
            ("user_group", text(&self.user_group)),
            ("protocol", text(&self.protocol)),
            ("email_account_server", text(&self.email_account_server)),
            ("email_account_user", text(&self.email_account_user)),
            ("email_account_pass", text(&self.email_account_pass)),
            ("pop3_auth_mode", text(&self.pop3_auth_mode)),
            ("active", text(&self.active)),
            (
                "email_frequency_check_mins",
                self.email_frequency_check_mins
                    .map_or("NULL".to_owned(), |m| m.to_string()),
            ),
            ("group_id", text(&self.group_id)),
            ("email_account_type", text(&self.email_account_type)),
        ];
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let values: Vec<&str> = columns.iter().map(|(_, value)| value.as_str()).collect();
        format!(
            "{verb} INTO {TABLE} ({}) VALUES ({});",
            names.join(", "),
            values.join(", ")
        )
    }
}

/// `value` as a MariaDB string literal in the default SQL mode, where a backslash escapes:
/// quotes doubled, backslashes and NULs escaped.
pub fn quote(value: &str) -> String {
    let mut literal = String::with_capacity(value.len() + 2);
    literal.push('\'');
    for c in value.chars() {
        match c {
            '\'' => literal.push_str("''"),
            '\\' => literal.push_str("\\\\"),
            '\0' => literal.push_str("\\0"),
            c => literal.push(c),
        }
    }
    literal.push('\'');
    literal
}
