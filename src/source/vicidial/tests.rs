//! The mapping of VICIdial rows to accounts, the interval rule and the advice in VICIdial's
//! terms.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::config::Reach;
use crate::verdict::TlsMode;

const PASSWORD: &str = "s3cr'et\\pw";

fn settings() -> VicidialSettings {
    let reach = Reach {
        tls: TlsMode::Implicit,
        tls_verify: true,
        ca_file: None,
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
    };
    VicidialSettings {
        name: "vicidial".into(),
        database: Database::Parts {
            host: "localhost".into(),
            port: 3306,
            socket: None,
            database: "asterisk".into(),
            user: "monitor".into(),
            password: None,
        },
        refresh: Duration::from_secs(60),
        timeout: Duration::from_secs(10),
        in_groups: None,
        defaults: reach.clone(),
        overrides: BTreeMap::from([(
            "plain.example.com".to_string(),
            Reach {
                tls: TlsMode::Starttls,
                ..reach
            },
        )]),
    }
}

fn row(id: &str, protocol: &str) -> Row {
    Row {
        email_account_id: id.into(),
        email_account_name: Some("Support inbox".into()),
        user_group: Some("ADMIN".into()),
        protocol: Some(protocol.into()),
        email_account_server: Some("mail.example.com".into()),
        email_account_user: Some("support@example.com".into()),
        email_account_pass: Some(Password::new(PASSWORD)),
        pop3_auth_mode: Some("BEST".into()),
        email_frequency_check_mins: Some(5),
        group_id: Some("SUPPORT".into()),
    }
}

#[test]
fn a_row_becomes_an_account_reached_the_way_vicidial_reaches_it() {
    let account = account(&settings(), &row("1001", "POP3")).unwrap();
    assert_eq!(account.name, "1001");
    assert_eq!(account.group, "SUPPORT");
    let t = &account.target;
    assert_eq!(
        (t.protocol, t.host.as_str(), t.port),
        (Protocol::Pop3, "mail.example.com", 995)
    );
    assert_eq!((t.tls.mode, t.tls.verify), (TlsMode::Implicit, true));
    assert_eq!(t.username, "support@example.com");
    assert_eq!(t.password.expose(), PASSWORD);
    assert_eq!(t.auth_mode, AuthMode::Best);
    assert_eq!(
        account.origin,
        Origin::Vicidial(VicidialRow {
            source: "vicidial".into(),
            email_account_name: "Support inbox".into(),
            user_group: "ADMIN".into(),
            frequency_check_mins: 5,
        })
    );
    let imap = account_of("IMAP", |_| {});
    assert_eq!(
        (imap.target.protocol, imap.target.port),
        (Protocol::Imap, 993)
    );
}

fn account_of(protocol: &str, change: impl FnOnce(&mut Row)) -> Account {
    let mut r = row("1001", protocol);
    change(&mut r);
    account(&settings(), &r).unwrap()
}

fn skipped(change: impl FnOnce(&mut Row)) -> String {
    let mut r = row("1001", "POP3");
    change(&mut r);
    let why = account(&settings(), &r).unwrap_err();
    assert!(!why.contains(PASSWORD) && !why.contains("s3cr"), "{why}");
    why
}

#[test]
fn every_pop3_auth_mode_is_taken_and_imap_ignores_it() {
    for (column, mode) in [
        ("BEST", AuthMode::Best),
        ("PASS", AuthMode::Pass),
        ("APOP", AuthMode::Apop),
        ("CRAM-MD5", AuthMode::CramMd5),
    ] {
        let a = account_of("POP3", |r| r.pop3_auth_mode = Some(column.into()));
        assert_eq!(a.target.auth_mode, mode);
        let a = account_of("IMAP", |r| r.pop3_auth_mode = Some(column.into()));
        assert_eq!(a.target.auth_mode, AuthMode::Best);
    }
    let a = account_of("POP3", |r| r.pop3_auth_mode = None);
    assert_eq!(a.target.auth_mode, AuthMode::Best);
}

#[test]
fn overrides_name_servers_case_insensitively_and_a_port_in_the_column_wins() {
    let a = account_of("POP3", |r| {
        r.email_account_server = Some("Plain.Example.com".into())
    });
    assert_eq!((a.target.tls.mode, a.target.port), (TlsMode::Starttls, 110));
    let a = account_of("IMAP", |r| {
        r.email_account_server = Some("mail.example.com:10993".into())
    });
    assert_eq!(
        (a.target.tls.mode, a.target.port),
        (TlsMode::Implicit, 10993)
    );
}

#[test]
fn unusable_rows_say_which_column_and_never_the_password() {
    assert_eq!(
        skipped(|r| r.email_account_server = Some(" ".into())),
        "email_account_server is empty"
    );
    assert_eq!(
        skipped(|r| r.pop3_auth_mode = Some(String::new())),
        "pop3_auth_mode \"\" is none of BEST, PASS, APOP, CRAM-MD5"
    );
    assert_eq!(
        skipped(|r| r.group_id = None),
        "group_id (the in-group) is empty"
    );
    assert_eq!(
        skipped(|r| r.email_account_pass = None),
        "email_account_pass is empty"
    );
    assert_eq!(
        skipped(|r| r.email_account_pass = Some(Password::new(format!("{PASSWORD}\n")))),
        "email_account_pass contains a line break or NUL"
    );
    assert_eq!(
        skipped(|r| r.email_account_user = Some(String::new())),
        "email_account_user is empty"
    );
    assert_eq!(
        skipped(|r| r.protocol = Some("SMTP".into())),
        "protocol \"SMTP\" is neither POP3 nor IMAP"
    );
    assert!(
        skipped(|r| r.email_account_server = Some("mail.example.com:99999".into()))
            .starts_with("email_account_server: ")
    );
    assert!(skipped(|r| r.email_account_id = "a\u{7}b".into()).starts_with("email_account_id "));
}

#[test]
fn the_interval_is_never_shorter_than_vicidials_own_check() {
    let minute = Duration::from_secs(60);
    assert_eq!(interval(minute, 5), 5 * minute);
    assert_eq!(interval(10 * minute, 5), 10 * minute);
    // 0: VICIdial checks on every run of its poller; the configured interval stands.
    assert_eq!(interval(Duration::from_secs(1), 0), Duration::from_secs(1));
    let a = account_of("POP3", |r| r.email_frequency_check_mins = Some(15));
    assert_eq!(a.interval, 15 * minute);
    let a = account_of("POP3", |r| r.email_frequency_check_mins = None);
    assert_eq!(a.interval, minute);
}

#[test]
fn info_labels_from_free_text_are_bounded_and_without_control_characters() {
    let a = account_of("POP3", |r| {
        r.email_account_name = Some(format!("a\nb{}", "x".repeat(300)));
        r.user_group = None;
    });
    let Origin::Vicidial(row) = a.origin else {
        panic!("not a VICIdial account")
    };
    assert_eq!(row.email_account_name.chars().count(), 100);
    assert!(row.email_account_name.starts_with("abx"));
    assert_eq!(row.user_group, "");
}

#[test]
fn advice_names_the_vicidial_field_to_change() {
    let trap = "APOP advertised but rejected (the server likely stores hashed passwords and \
                cannot verify it); pin auth_mode: PASS so that no failed login precedes every \
                check";
    let advice = advise("1001", trap.to_string());
    assert!(advice.starts_with(trap), "{advice}");
    assert!(
        advice.ends_with("in VICIdial: Admin > Email Accounts > 1001, set Auth Mode to PASS"),
        "{advice}"
    );
    let wrong = advise(
        "1002",
        "PASS rejected: check the username and password (and whether the account is locked \
         or expired)"
            .into(),
    );
    assert!(
        wrong.contains("Email Accounts > 1002, check Email Account User"),
        "{wrong}"
    );
    let tls = advise(
        "1003",
        "the server takes logins only over TLS; set tls: starttls".into(),
    );
    assert!(tls.contains("overrides"), "{tls}");
    let other = "the server reports a fault of its own; tell the mail admin";
    assert_eq!(advise("1004", other.into()), other);
}

#[test]
fn dsn_errors_never_repeat_the_dsn() {
    for dsn in [
        "postgres://monitor:Hunter2pw@db/asterisk",
        "mysql://monitor:Hunter2pw@db/asterisk?nosuch=Hunter2pw",
        "mysql://monitor:Hunter2pw@db:notaport/asterisk",
        "Hunter2pw",
    ] {
        let why = check_dsn(dsn).unwrap_err();
        assert!(!why.contains("Hunter2pw"), "{why}");
        assert!(
            why.contains("mysql://USER:PASSWORD@HOST:PORT/DATABASE"),
            "{why}"
        );
    }
    assert!(check_dsn("mysql://monitor:Hunter2pw@db:3306/asterisk").is_ok());
    assert!(check_dsn("mysql://monitor@localhost/asterisk?socket=/run/mysqld/mysqld.sock").is_ok());
}

#[test]
fn messages_lose_the_database_password() {
    assert_eq!(
        redact(
            "Access denied (pw Hunter2pw)".into(),
            Some("Hunter2pw".into())
        ),
        "Access denied (pw ***)"
    );
    assert_eq!(redact("fine".into(), None), "fine");
}
