//! Regression tests of the real-MariaDB harness: VICIdial's table as VICIdial defines it, rows
//! that read back byte for byte, the read-only user's grants enforced by the server, and a
//! stop and start that keep the data. Each test owns its server.

mod support;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::{MariaDb, Row};

/// Starts a server for the calling test, or returns from it after the loud skip message.
macro_rules! mariadb_or_skip {
    ($test:expr) => {
        match MariaDb::start_or_skip($test) {
            Some(db) => db,
            None => return,
        }
    };
}

/// `bytes` as MariaDB's `HEX()` prints them.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Every column of `vicidial_email_accounts` in order: name, type, nullable, default, as
/// `information_schema.COLUMNS` reports VICIdial's definitions on MariaDB.
const VICIDIAL_COLUMNS: &str = "\
email_account_id	varchar(20)	NO	NULL
email_account_name	varchar(100)	YES	NULL
email_account_description	varchar(255)	YES	NULL
user_group	varchar(20)	YES	'---ALL---'
protocol	enum('POP3','IMAP','SMTP')	YES	'IMAP'
email_replyto_address	varchar(255)	YES	NULL
email_account_server	varchar(255)	YES	NULL
email_account_user	varchar(255)	YES	NULL
email_account_pass	varchar(100)	YES	NULL
pop3_auth_mode	enum('BEST','PASS','APOP','CRAM-MD5')	YES	'BEST'
active	enum('Y','N')	YES	'N'
email_frequency_check_mins	tinyint(3) unsigned	YES	5
group_id	varchar(20)	YES	NULL
default_list_id	bigint(14) unsigned	YES	NULL
call_handle_method	varchar(20)	YES	'CID'
agent_search_method	enum('LO','LB','SO')	YES	'LB'
campaign_id	varchar(8)	YES	NULL
list_id	bigint(14) unsigned	YES	NULL
email_account_type	enum('INBOUND','OUTBOUND')	YES	'INBOUND'
";

#[test]
fn the_table_has_vicidials_columns_and_keys() {
    let db = mariadb_or_skip!("the_table_has_vicidials_columns_and_keys");
    let columns = db.query(
        "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = 'asterisk' AND TABLE_NAME = 'vicidial_email_accounts' \
         ORDER BY ORDINAL_POSITION",
    );
    assert_eq!(columns, VICIDIAL_COLUMNS);
    let keys = db.query(
        "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = 'asterisk' AND TABLE_NAME = 'vicidial_email_accounts' \
         ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    );
    assert_eq!(
        keys,
        "email_accounts_group_key\t1\tgroup_id\nPRIMARY\t0\temail_account_id\n"
    );
    assert_eq!(db.database(), "asterisk");
    // utf8mb4, as on Debian's packaged server, so any password VICIdial stores fits.
    assert_eq!(
        db.query(
            "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = 'asterisk' AND TABLE_NAME = 'vicidial_email_accounts' \
             AND COLUMN_NAME = 'email_account_pass'"
        ),
        "utf8mb4\n"
    );
}

#[test]
fn a_row_reads_back_byte_for_byte() {
    let db = mariadb_or_skip!("a_row_reads_back_byte_for_byte");
    // Quotes of both kinds, backslashes (one before `n` and one before `'`, which an
    // unescaped literal would turn into a newline and a quote), SQL wildcards, a NUL, a tab
    // and non-ASCII.
    let password = "it's \"q\" \\n \\' 100%_x\0\tpässwörd€";
    db.insert_row(
        &Row::new("mbx-1")
            .name("Support's inbox")
            .user_group("AGENTS")
            .protocol("POP3")
            .server("mail.example.com")
            .user("support@example.com")
            .password(password)
            .auth_mode("CRAM-MD5")
            .active(false)
            .frequency_mins(15)
            .group("SUPPORT")
            .account_type("OUTBOUND"),
    );
    let stored = db.query(
        "SELECT HEX(email_account_pass), LENGTH(email_account_pass) \
         FROM vicidial_email_accounts WHERE email_account_id = 'mbx-1'",
    );
    assert_eq!(
        stored,
        format!("{}\t{}\n", hex(password.as_bytes()), password.len()),
        "the password is stored byte for byte"
    );
    let row = db.query(
        "SELECT email_account_id, email_account_name, user_group, protocol, \
         email_account_server, email_account_user, pop3_auth_mode, active, \
         email_frequency_check_mins, group_id, email_account_type, \
         email_account_description, call_handle_method \
         FROM vicidial_email_accounts",
    );
    assert_eq!(
        row,
        "mbx-1\tSupport's inbox\tAGENTS\tPOP3\tmail.example.com\tsupport@example.com\t\
         CRAM-MD5\tN\t15\tSUPPORT\tOUTBOUND\tNULL\tCID\n",
        "each builder sets its own column; the others take VICIdial's defaults"
    );

    // NULLs, and a replace that changes the password.
    let mut bare = Row::new("mbx-2");
    bare.email_account_name = None;
    bare.group_id = None;
    bare.email_frequency_check_mins = None;
    db.insert_row(&bare);
    db.replace_row(&Row::new("mbx-1").password("new \\ 'one'"));
    assert_eq!(
        db.query(
            "SELECT email_account_id, email_account_name, group_id, \
             email_frequency_check_mins, active, email_account_pass \
             FROM vicidial_email_accounts ORDER BY email_account_id"
        ),
        "mbx-1\tmbx-1 mailbox\tNULL\t5\tY\tnew \\ 'one'\nmbx-2\tNULL\tNULL\tNULL\tY\tNULL\n"
    );
    db.delete_row("mbx-1");
    assert_eq!(
        db.query("SELECT email_account_id FROM vicidial_email_accounts"),
        "mbx-2\n"
    );
}

#[test]
fn the_reader_selects_the_table_over_tcp_with_the_dsn() {
    let db = mariadb_or_skip!("the_reader_selects_the_table_over_tcp_with_the_dsn");
    let password = "o'brien \\ \"x\"";
    db.insert_row(&Row::new("mbx-1").password(password).group("SUPPORT"));

    // Log in with what the DSN says, so a wrong DSN fails here.
    let dsn = db.dsn();
    let rest = dsn.strip_prefix("mysql://").expect("mysql:// scheme");
    let (credentials, location) = rest.split_once('@').expect("credentials@host");
    let (user, dsn_password) = credentials.split_once(':').expect("user:password");
    assert_eq!(
        location,
        format!("127.0.0.1:{}/asterisk", db.port()),
        "host, port and database"
    );
    assert_eq!(user, db.user());
    assert_eq!(dsn_password, db.password());
    assert!(
        dsn_password
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c)),
        "the password needs no percent-encoding in the DSN"
    );
    assert!(
        dsn_password.len() >= 20 && dsn_password.chars().any(|c| c.is_ascii_digit()),
        "the password is generated, not a word"
    );

    let rows = db
        .query_as(
            user,
            dsn_password,
            "SELECT email_account_id, group_id, HEX(email_account_pass) \
             FROM vicidial_email_accounts",
        )
        .expect("the reader may SELECT the table");
    assert_eq!(
        rows,
        format!("mbx-1\tSUPPORT\t{}\n", hex(password.as_bytes()))
    );
    assert!(
        db.query_as(user, "not-the-password", "SELECT 1")
            .expect_err("a wrong password is refused")
            .contains("Access denied"),
    );

    // Another reader, whose password needs quoting in SQL and encoding in a URL.
    let other_password = "it's a \\ p@ss:word/?#";
    db.add_reader("other_reader", other_password);
    assert_eq!(
        db.query_as(
            "other_reader",
            other_password,
            "SELECT email_account_id FROM vicidial_email_accounts"
        ),
        Ok("mbx-1\n".to_owned())
    );
    let error = db
        .query_as(
            "other_reader",
            other_password,
            "SELECT user FROM vicidial_users",
        )
        .expect_err("the other reader has the same one grant");
    assert!(error.contains("SELECT command denied"), "{error}");
}

#[test]
fn the_reader_may_do_nothing_else() {
    let db = mariadb_or_skip!("the_reader_may_do_nothing_else");
    db.insert_row(&Row::new("mbx-1"));
    let (user, password) = (db.user(), db.password());
    let refused = |sql: &str, expected: &str| {
        let error = db
            .query_as(user, password, sql)
            .expect_err("the server refuses the reader");
        assert!(error.contains(expected), "{sql}: {error}");
    };
    refused(
        "SELECT user FROM vicidial_users",
        "SELECT command denied to user 'mbx_monitor'@'127.0.0.1' for table \
         `asterisk`.`vicidial_users`",
    );
    refused(
        "INSERT INTO vicidial_email_accounts (email_account_id) VALUES ('mbx-2')",
        "INSERT command denied",
    );
    refused(
        "UPDATE vicidial_email_accounts SET active = 'N'",
        "UPDATE command denied",
    );
    refused(
        "DELETE FROM vicidial_email_accounts",
        "DELETE command denied",
    );
    assert_eq!(
        db.query("SELECT email_account_id, active FROM vicidial_email_accounts"),
        "mbx-1\tY\n"
    );

    // Exactly one grant, at both hosts a local client arrives from. The password hash in
    // the USAGE line is cut off, not printed.
    for host in ["127.0.0.1", "localhost"] {
        let grants = db.query(&format!("SHOW GRANTS FOR 'mbx_monitor'@'{host}'"));
        let grants: Vec<&str> = grants
            .lines()
            .map(|g| g.split(" IDENTIFIED BY").next().unwrap_or_default())
            .collect();
        assert_eq!(
            grants,
            [
                format!("GRANT USAGE ON *.* TO `mbx_monitor`@`{host}`"),
                format!(
                    "GRANT SELECT ON `asterisk`.`vicidial_email_accounts` TO \
                     `mbx_monitor`@`{host}`"
                ),
            ]
        );
    }
}

#[test]
fn stop_closes_the_port_and_start_brings_the_data_back() {
    let mut db = mariadb_or_skip!("stop_closes_the_port_and_start_brings_the_data_back");
    db.insert_row(&Row::new("mbx-1").password("kept"));
    let (port, socket) = (db.port(), db.socket_path().to_owned());

    db.stop();
    assert!(!db.is_running());
    assert!(
        TcpStream::connect_timeout(&db.addr(), Duration::from_secs(1)).is_err(),
        "nothing listens on the port"
    );
    let error = db
        .query_as(db.user(), db.password(), "SELECT 1")
        .expect_err("a stopped server answers nothing");
    assert!(error.contains("Can't connect"), "{error}");
    assert!(!socket.exists(), "the socket is gone");

    db.start();
    assert!(db.is_running());
    assert_eq!((db.port(), db.socket_path()), (port, socket.as_path()));
    assert_eq!(
        db.query_as(
            db.user(),
            db.password(),
            "SELECT email_account_id, email_account_pass FROM vicidial_email_accounts"
        ),
        Ok("mbx-1\tkept\n".to_owned()),
        "the row and the reader's grant survive the restart"
    );
    assert!(
        db.log().contains("Shutdown complete"),
        "the stop was graceful"
    );
}

/// Polls `done` until it holds; panics with `what` after a generous deadline.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The accept queue of the socket listening on 127.0.0.1:`port`: `/proc/net/tcp` shows it as
/// the `rx_queue` of the LISTEN (`0A`) entry.
fn connections_waiting_for_accept(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
        .and_then(|fields| {
            let (_, rx_queue) = fields.get(4)?.split_once(':')?;
            usize::from_str_radix(rx_queue, 16).ok()
        })
        .expect("a socket listens on the port")
}

#[test]
fn a_table_lock_holds_the_readers_query_until_it_is_dropped() {
    let db = mariadb_or_skip!("a_table_lock_holds_the_readers_query_until_it_is_dropped");
    db.insert_row(&Row::new("mbx-1"));
    let lock = db.lock_table();
    thread::scope(|scope| {
        let reader = scope.spawn(|| {
            db.query_as(
                db.user(),
                db.password(),
                "SELECT email_account_id FROM vicidial_email_accounts",
            )
        });
        wait_for("the reader's query waits for the lock", || {
            db.sessions_waiting_for_lock() == 1
        });
        assert!(!reader.is_finished(), "the query waits for the lock");
        drop(lock);
        assert_eq!(
            reader.join().expect("reader thread"),
            Ok("mbx-1\n".to_owned())
        );
    });
    assert_eq!(db.sessions_waiting_for_lock(), 0);
}

#[test]
fn a_frozen_server_answers_once_thawed() {
    let db = mariadb_or_skip!("a_frozen_server_answers_once_thawed");
    db.insert_row(&Row::new("mbx-1"));
    // freeze() itself waits until the process is stopped, and fails if it is not.
    db.freeze();
    thread::scope(|scope| {
        let reader = scope.spawn(|| {
            db.query_as(
                db.user(),
                db.password(),
                "SELECT email_account_id FROM vicidial_email_accounts",
            )
        });
        // The kernel completes the handshake; the connection waits in the accept queue.
        wait_for("the reader's connection waits to be accepted", || {
            connections_waiting_for_accept(db.port()) == 1
        });
        assert!(
            !reader.is_finished(),
            "nothing answers a frozen server's client"
        );
        db.thaw();
        assert_eq!(
            reader.join().expect("reader thread"),
            Ok("mbx-1\n".to_owned()),
            "the connection made while frozen is served after the thaw"
        );
    });
}

#[test]
fn quote_escapes_what_the_server_would_read_as_escapes() {
    assert_eq!(support::mariadb::quote("plain"), "'plain'");
    assert_eq!(support::mariadb::quote("it's"), "'it''s'");
    assert_eq!(support::mariadb::quote("a\\b"), "'a\\\\b'");
    assert_eq!(support::mariadb::quote("nul\0"), "'nul\\0'");
}
