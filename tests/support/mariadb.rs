//! Private, real MariaDB servers for the tests of the VICIdial account source, one per test:
//! a data directory made by `mariadb-install-db` in a temporary directory, `mariadbd` on a free
//! port of 127.0.0.1 and a private socket, VICIdial's `asterisk` database with its
//! `vicidial_email_accounts` table, and a user that may only read that table.
//!
//! Nothing of the system's MariaDB is used: the server and the client run with `--no-defaults`,
//! so no system option file is read and a packaged server (stopped or not) is never touched.
//! The harness administers the server as the operating-system user through the socket
//! (`unix_socket` authentication, no password); the exporter's user logs in over TCP with a
//! password and real grants.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::dovecot::{signal, wait_until};
use super::{MARIADB, MARIADB_CLIENT, MARIADB_INSTALL_DB};

/// How long `mariadbd` may take to accept connections before the test fails with its log.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful shutdown may take before the server is killed and the test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh ports are picked this many times when another process grabs one first.
const START_ATTEMPTS: u32 = 5;
/// The `mariadb` client gives up connecting after this many seconds.
const CLIENT_CONNECT_TIMEOUT_SECS: u32 = 10;

/// VICIdial's database name.
pub const DATABASE: &str = "asterisk";
/// The table the VICIdial account source reads.
pub const TABLE: &str = "vicidial_email_accounts";
/// The exporter's database user, who may only `SELECT` from [`TABLE`].
pub const READER: &str = "mbx_monitor";

/// VICIdial's `CREATE TABLE vicidial_email_accounts`, with its later
/// `ALTER TABLE ... ADD pop3_auth_mode ... AFTER email_account_pass` folded in.
pub const VICIDIAL_EMAIL_ACCOUNTS_DDL: &str = "CREATE TABLE vicidial_email_accounts (
email_account_id VARCHAR(20) NOT NULL,
email_account_name VARCHAR(100) DEFAULT NULL,
email_account_description VARCHAR(255) DEFAULT NULL,
user_group VARCHAR(20) DEFAULT '---ALL---',
protocol ENUM('POP3','IMAP','SMTP') DEFAULT 'IMAP',
email_replyto_address VARCHAR(255) DEFAULT NULL,
email_account_server VARCHAR(255) DEFAULT NULL,
email_account_user VARCHAR(255) DEFAULT NULL,
email_account_pass VARCHAR(100) DEFAULT NULL,
pop3_auth_mode ENUM('BEST','PASS','APOP','CRAM-MD5') default 'BEST',
active ENUM('Y','N') DEFAULT 'N',
email_frequency_check_mins TINYINT(3) UNSIGNED DEFAULT '5',
group_id VARCHAR(20) DEFAULT NULL,
default_list_id BIGINT(14) UNSIGNED DEFAULT NULL,
call_handle_method VARCHAR(20) DEFAULT 'CID',
agent_search_method ENUM('LO','LB','SO') DEFAULT 'LB',
campaign_id VARCHAR(8) DEFAULT NULL,
list_id BIGINT(14) UNSIGNED DEFAULT NULL,
email_account_type ENUM('INBOUND','OUTBOUND') DEFAULT 'INBOUND',
PRIMARY KEY (email_account_id),
KEY email_accounts_group_key (group_id)
)";

/// A few of VICIdial's `vicidial_users` columns, with one agent: a table of the same
/// database that the exporter's user must not read.
const VICIDIAL_USERS_SQL: &str = "CREATE TABLE vicidial_users (
user_id INT(9) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
user VARCHAR(20) NOT NULL,
pass VARCHAR(100) NOT NULL,
full_name VARCHAR(50),
user_level TINYINT(3) UNSIGNED DEFAULT '1',
user_group VARCHAR(20)
);
INSERT INTO vicidial_users (user, pass, full_name, user_level, user_group)
VALUES ('6666', 'agent-secret', 'Admin', 9, 'ADMIN');
";

/// A running (or, between [`MariaDb::stop`] and [`MariaDb::start`], stopped) MariaDB;
/// killed, and its directory removed, on drop.
#[derive(Debug)]
pub struct MariaDb {
    child: Option<Child>,
    mariadbd: PathBuf,
    client: PathBuf,
    /// Who the harness administers the server as, through the socket.
    admin: String,
    port: u16,
    password: String,
    datadir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
    // Last, so it is removed after the process that uses it is gone.
    dir: TempDir,
}

impl MariaDb {
    /// Starts a server holding VICIdial's table (empty) and the read-only user, for `test`;
    /// or returns `None` after the loud skip message of [`super::peer_or_skip`] when MariaDB
    /// is not installed (a panic when peers are required).
    pub fn start_or_skip(test: &str) -> Option<Self> {
        let mariadbd = super::peer_or_skip(&MARIADB, test)?;
        let install_db = super::peer_or_skip(&MARIADB_INSTALL_DB, test)?;
        let client = super::peer_or_skip(&MARIADB_CLIENT, test)?;
        Some(Self::create(mariadbd, &install_db, client))
    }

    fn create(mariadbd: PathBuf, install_db: &Path, client: PathBuf) -> Self {
        // Unix socket paths are limited to ~108 bytes: stay near the root when TMPDIR is deep.
        let parent = std::env::temp_dir();
        let parent = if parent.as_os_str().len() <= 40 {
            parent
        } else {
            PathBuf::from("/tmp")
        };
        let dir = tempfile::Builder::new()
            .prefix("mdb")
            .tempdir_in(parent)
            .expect("create temp dir");
        fs::create_dir(dir.path().join("tmp")).expect("create tmp dir");
        let admin = os_user();
        let mut db = MariaDb {
            child: None,
            mariadbd,
            client,
            port: 0,
            password: generated_password(),
            datadir: dir.path().join("data"),
            socket: dir.path().join("mysqld.sock"),
            log: dir.path().join("mariadbd.err"),
            stderr: dir.path().join("mariadbd.stderr"),
            admin,
            dir,
        };
        db.install(install_db);
        db.start_on_free_port();
        db.create_schema();
        db
    }

    /// Temporary tables go to the instance's own directory: several servers writing theirs
    /// to /tmp collide.
    fn tmpdir_option(&self) -> String {
        format!("--tmpdir={}", self.dir.path().join("tmp").display())
    }

    /// `mariadb-install-db`: the system tables, `root` and the administering OS user
    /// reachable through the socket without a password, no test database.
    fn install(&self, install_db: &Path) {
        let out = Command::new(install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.datadir.display()))
            .arg(format!("--user={}", self.admin))
            .args([
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            // Passed on to the bootstrap server: without them it writes a 96 MiB redo log, and
            // concurrent bootstraps sharing /tmp drop each other's temporary tables.
            .args(memory_options())
            .arg(self.tmpdir_option())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", install_db.display()));
        assert!(
            out.status.success(),
            "mariadb-install-db failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    fn start_on_free_port(&mut self) {
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port();
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(why) => {
                    let _ = writeln!(failures, "attempt {attempt}: {why}");
                    // Only a port taken between picking and binding is worth another try.
                    if !why.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("mariadbd did not start\n{failures}");
    }

    /// Starts the server again on the same data directory, port and socket, and waits until
    /// it accepts connections. Panics with the server's log if it does not.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "MariaDB is already running");
        if let Err(why) = self.spawn_and_wait() {
            panic!("mariadbd did not start again\n{why}");
        }
    }

    /// Shuts the server down gracefully (SIGTERM) and waits until the process has exited and
    /// its port refuses connections. Panics, after killing it, if that takes too long.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("MariaDB is running");
        signal("TERM", &[child.id()]);
        let exited = wait_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mariadbd did not shut down within {STOP_TIMEOUT:?}\n--- log ---\n{}",
                self.log()
            );
        }
        let addr = self.addr();
        let closed = wait_until(STOP_TIMEOUT, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
        });
        assert!(closed, "port {} still accepts connections", self.port);
    }

    /// Whether the server process is running (between `stop` and `start` it is not).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log_offset = fs::metadata(&self.log).map_or(0, |m| m.len());
        let mut command = Command::new(&self.mariadbd);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.datadir.display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--log-error={}", self.log.display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadbd.pid").display()
            ))
            // Debian's packaged server defaults to utf8mb4, as VICIdial sites on it do.
            .args([
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--skip-name-resolve",
                "--skip-log-bin",
            ])
            .args(memory_options())
            .arg(self.tmpdir_option())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Errors found before the error log is opened (a bad option) only reach stderr.
            .stderr(File::create(&self.stderr).expect("create stderr file"));
        if is_root() {
            // mariadbd refuses to run as root unless told to.
            command.arg("--user=root");
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.mariadbd.display()));
        match self.wait_until_ready(&mut child, log_offset) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = read_from(&self.log, log_offset);
                let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
                Err(format!("{why}\n--- log ---\n{log}--- stderr ---\n{stderr}"))
            }
        }
    }

    /// Ready means the server logged "ready for connections" (it binds the port before that,
    /// so the port is ours, not a stranger's) and answers a query through the socket.
    fn wait_until_ready(&self, child: &mut Child, log_offset: u64) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait mariadbd") {
                return Err(format!("mariadbd exited with {status}"));
            }
            if read_from(&self.log, log_offset).contains("ready for connections")
                && self.admin_sql(None, "SELECT 1").is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `asterisk` database, VICIdial's table, another table, and the read-only user.
    fn create_schema(&self) {
        let mut sql = format!(
            "CREATE DATABASE {DATABASE};\nUSE {DATABASE};\n\
             {VICIDIAL_EMAIL_ACCOUNTS_DDL};\n{VICIDIAL_USERS_SQL}"
        );
        sql.push_str(&reader_sql(READER, &self.password));
        if let Err(e) = self.admin_sql(None, &sql) {
            panic!("creating the VICIdial schema failed: {e}");
        }
    }

    /// Creates `user` (at 127.0.0.1 and localhost) with `password`, allowed exactly
    /// `SELECT` on `asterisk.vicidial_email_accounts`, as the README tells operators to.
    pub fn add_reader(&self, user: &str, password: &str) {
        self.execute(&reader_sql(user, password));
    }

    /// `mysql://USER:PASSWORD@127.0.0.1:PORT/asterisk` for the read-only user. The password
    /// holds only URL-safe characters, so nothing needs percent-encoding.
    pub fn dsn(&self) -> String {
        format!(
            "mysql://{READER}:{}@127.0.0.1:{}/{DATABASE}",
            self.password, self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// 127.0.0.1 and [`Self::port`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The read-only user's name.
    pub fn user(&self) -> &'static str {
        READER
    }

    /// The read-only user's password: random per instance, letters, digits, `.` and `-`.
    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn database(&self) -> &'static str {
        DATABASE
    }

    /// Runs `sql` (one or more `;`-terminated statements) in `asterisk` with every privilege,
    /// through the socket. Panics with the client's error if it fails.
    pub fn execute(&self, sql: &str) {
        self.query(sql);
    }

    /// Runs `sql` like [`Self::execute`] and returns what it printed: one line per row, values
    /// separated by tabs, no header, values unescaped, `NULL` for NULL.
    pub fn query(&self, sql: &str) -> String {
        self.admin_sql(Some(DATABASE), sql)
            .unwrap_or_else(|e| panic!("SQL failed as the administrator: {e}\n--- SQL ---\n{sql}"))
    }

    /// Runs `sql` in `asterisk` as `user` with `password` over TCP to 127.0.0.1, like the
    /// exporter connects. `Err` holds the client's error (e.g. "SELECT command denied").
    pub fn query_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let mut command = self.client_command();
        command
            .args(["--protocol=TCP", "--host=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"))
            .arg(format!("--database={DATABASE}"))
            // Through the environment, not the command line that `ps` shows.
            .env("MYSQL_PWD", password);
        run_client(command, sql)
    }

    /// Inserts `row` into `vicidial_email_accounts`. Panics if the server refuses it.
    pub fn insert_row(&self, row: &Row) {
        self.execute(&row.sql("INSERT"));
    }

    /// Inserts `row`, or replaces the row with its `email_account_id` (unset columns take
    /// their defaults again).
    pub fn replace_row(&self, row: &Row) {
        self.execute(&row.sql("REPLACE"));
    }

    /// Deletes the row of `email_account_id`.
    pub fn delete_row(&self, email_account_id: &str) {
        self.execute(&format!(
            "DELETE FROM {TABLE} WHERE email_account_id = {};",
            quote(email_account_id)
        ));
    }

    /// The server's error log so far (across restarts), for assertions and failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The temporary directory holding the data directory, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn client_command(&self) -> Command {
        let mut command = Command::new(&self.client);
        command
            .arg("--no-defaults")
            .args(["--batch", "--raw", "--skip-column-names"])
            .arg("--default-character-set=utf8mb4")
            .arg(format!("--connect-timeout={CLIENT_CONNECT_TIMEOUT_SECS}"))
            .env_remove("MYSQL_PWD")
            .env_remove("MYSQL_HOST")
            .env_remove("MYSQL_TCP_PORT")
            .env_remove("MYSQL_UNIX_PORT");
        command
    }

    fn admin_sql(&self, database: Option<&str>, sql: &str) -> Result<String, String> {
        let mut command = self.client_command();
        command
            .arg("--protocol=SOCKET")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--user={}", self.admin));
        if let Some(database) = database {
            command.arg(format!("--database={database}"));
        }
        run_client(command, sql)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Nothing is kept, so there is nothing to shut down gracefully for.
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("--- mariadbd log ---\n{}", self.log());
        }
    }
}

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

/// `CREATE USER` at both hosts a local client arrives from (TCP from 127.0.0.1; the socket
/// as localhost, names not being resolved) and the one grant.
fn reader_sql(user: &str, password: &str) -> String {
    let mut sql = String::new();
    for host in ["127.0.0.1", "localhost"] {
        let account = format!("{}@{}", quote(user), quote(host));
        let _ = writeln!(
            sql,
            "CREATE USER {account} IDENTIFIED BY {};\n\
             GRANT SELECT ON {DATABASE}.{TABLE} TO {account};",
            quote(password)
        );
    }
    sql
}

/// Options that keep an instance small: a 16 MiB buffer pool, a 4 MiB redo log, a 1 MiB
/// temporary tablespace, small caches.
fn memory_options() -> [&'static str; 6] {
    [
        "--innodb-buffer-pool-size=16M",
        "--innodb-log-file-size=4M",
        "--innodb-log-buffer-size=1M",
        "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
        "--key-buffer-size=1M",
        "--aria-pagecache-buffer-size=1M",
    ]
}

/// Runs the client `command` with `sql` on its standard input.
fn run_client(mut command: Command, sql: &str) -> Result<String, String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the mariadb client: {e}"));
    // The statements are small; the client reads them all before it answers.
    child
        .stdin
        .take()
        .expect("client stdin")
        .write_all(sql.as_bytes())
        .expect("write SQL to the client");
    let out = child.wait_with_output().expect("wait for the client");
    if out.status.success() {
        String::from_utf8(out.stdout).map_err(|e| format!("client output is not UTF-8: {e}"))
    } else {
        Err(format!(
            "mariadb client {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// A password of 24 random hex digits between letters, `.` and `-`: not a word, and safe in a
/// URL without percent-encoding.
fn generated_password() -> String {
    let mut bytes = [0u8; 12];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("Mbx.{hex}-ro")
}

fn is_root() -> bool {
    fs::metadata("/proc/self").expect("/proc/self").uid() == 0
}

/// The operating-system user's name; `unix_socket` authentication maps it to the MariaDB
/// account that `mariadb-install-db --user` made.
fn os_user() -> String {
    if is_root() {
        return "root".to_owned();
    }
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("run `id -un`");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!name.is_empty(), "`id -un` printed no name");
    name
}

/// A port nothing listens on right now; another process may take it before mariadbd binds
/// it, so the caller retries on "Address already in use".
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn read_from(path: &Path, offset: u64) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}
