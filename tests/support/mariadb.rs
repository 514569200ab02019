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
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod row;

pub use row::{Row, quote};

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
        // CONT: a frozen server handles the TERM only once it runs again.
        signal("TERM", &[child.id()]);
        signal("CONT", &[child.id()]);
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
    /// `SELECT` on `asterisk.vicidial_email_accounts`: the one grant the source needs.
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

    /// Takes `LOCK TABLES vicidial_email_accounts WRITE` in a session of its own and returns
    /// once it holds it: until the guard is dropped, every other session's read of the table
    /// waits (a database that answers the handshake but not the query).
    pub fn lock_table(&self) -> TableLock {
        let mut command = self.admin_command(Some(DATABASE));
        // Each statement's result is written as soon as it is known, not at exit.
        command.arg("--unbuffered");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the mariadb client: {e}"));
        let mut stdin = child.stdin.take().expect("client stdin");
        stdin
            .write_all(format!("LOCK TABLES {TABLE} WRITE;\nSELECT 'locked';\n").as_bytes())
            .expect("write to the client");
        let mut answer = String::new();
        BufReader::new(child.stdout.take().expect("client stdout"))
            .read_line(&mut answer)
            .expect("read from the client");
        if answer.trim_end() != "locked" {
            drop(stdin);
            let out = child.wait_with_output().expect("wait for the client");
            panic!(
                "LOCK TABLES failed: {}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        TableLock {
            stdin: Some(stdin),
            child,
        }
    }

    /// How many sessions wait for a table lock (such as a read of the table while a
    /// [`TableLock`] is held): the condition a test polls for.
    pub fn sessions_waiting_for_lock(&self) -> usize {
        self.query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE STATE LIKE 'Waiting for table%lock'",
        )
        .trim()
        .parse()
        .expect("a count")
    }

    /// Suspends the server (SIGSTOP): connections are still accepted by the kernel, but
    /// nothing answers, like a hung database. [`Self::thaw`] resumes it.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().expect("MariaDB is running").id();
        signal("STOP", &[pid]);
        let stopped = wait_until(STOP_TIMEOUT, || process_state(pid) == Some('T'));
        assert!(stopped, "mariadbd was not suspended");
    }

    /// Resumes a server suspended by [`Self::freeze`] and waits until it answers again.
    pub fn thaw(&self) {
        let pid = self.child.as_ref().expect("MariaDB is running").id();
        signal("CONT", &[pid]);
        let answers = wait_until(START_TIMEOUT, || self.admin_sql(None, "SELECT 1").is_ok());
        assert!(answers, "mariadbd does not answer after SIGCONT");
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

    /// The client, logged in through the socket as the administering OS user.
    fn admin_command(&self, database: Option<&str>) -> Command {
        let mut command = self.client_command();
        command
            .arg("--protocol=SOCKET")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--user={}", self.admin));
        if let Some(database) = database {
            command.arg(format!("--database={database}"));
        }
        command
    }

    fn admin_sql(&self, database: Option<&str>, sql: &str) -> Result<String, String> {
        run_client(self.admin_command(database), sql)
    }
}

/// A session holding a write lock on `vicidial_email_accounts`; dropping it ends the session,
/// which releases the lock.
#[derive(Debug)]
pub struct TableLock {
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Drop for TableLock {
    fn drop(&mut self) {
        // End of input ends the client, and with it the session and its lock.
        drop(self.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
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

/// The state letter of `pid` in `/proc/PID/stat` (`T` when stopped by a signal).
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; the state follows it.
    stat.rsplit_once(") ")?.1.chars().next()
}

fn read_from(path: &Path, offset: u64) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}
