//! A reload against a real Dovecot: once a reload has replaced a password, no login with the
//! old one reaches the server, neither from probes that were waiting for a slot nor from
//! probes in flight. Counted in Dovecot's own log.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mailbox_exporter::app::{self, RunOptions};
use mailbox_exporter::schedule;
use support::{Dovecot, Flavor};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Polling gives up after this long: a condition not met by then is a failure.
const PATIENCE: Duration = Duration::from_secs(30);
/// Accounts on the one server, of which `PER_SERVER` probe at once.
const ACCOUNTS: usize = 6;
const PER_SERVER: usize = 2;
/// The first probes of the chosen accounts are all due this soon after start-up.
const FIRST_PROBES_WITHIN: Duration = Duration::from_secs(2);

/// A TCP relay in front of the mail server that holds every connection it accepts until it
/// is opened: a probe held here is in flight, but has sent nothing yet.
struct Gate {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    /// Connections accepted while closed.
    held: Arc<AtomicUsize>,
    /// Held connections that their client closed before the gate opened.
    abandoned: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Gate {
    async fn start(upstream: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, opened) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let abandoned = Arc::new(AtomicUsize::new(0));
        let (h, a) = (Arc::clone(&held), Arc::clone(&abandoned));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (opened, held, abandoned) = (opened.clone(), Arc::clone(&h), Arc::clone(&a));
                tokio::spawn(relay(client, upstream, opened, held, abandoned));
            }
        });
        Gate {
            addr,
            open,
            held,
            abandoned,
            task,
        }
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut opened: watch::Receiver<bool>,
    held: Arc<AtomicUsize>,
    abandoned: Arc<AtomicUsize>,
) {
    if !*opened.borrow() {
        held.fetch_add(1, Ordering::SeqCst);
        let mut byte = [0u8; 1];
        tokio::select! {
            _ = opened.wait_for(|open| *open) => {}
            // A POP3 client says nothing before the greeting: the read ends only when the
            // client hangs up.
            _ = client.peek(&mut byte) => {
                abandoned.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

async fn until(what: &str, dovecot: &Dovecot, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}\n--- dovecot log ---\n{}",
            dovecot.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Account names whose first probe is due within [`FIRST_PROBES_WITHIN`] of start-up (the
/// start-up offset is the name's phase in a 60 s window), so the test need not wait a minute.
fn early_names() -> Vec<String> {
    (0..)
        .map(|i| format!("inbox-{i}"))
        .filter(|name| schedule::phase(name, schedule::STARTUP_WINDOW) < FIRST_PROBES_WITHIN)
        .take(ACCOUNTS)
        .collect()
}

fn config(names: &[String], server: SocketAddr, user: &str) -> String {
    // Every probe held at the gate stays in flight: the timeout is far beyond the test.
    let mut text = format!(
        "interval: 10m\ntimeout: 5m\nper_server_concurrency: {PER_SERVER}\n\
         groups:\n  - name: support\n    accounts:\n"
    );
    for name in names {
        text.push_str(&format!(
            "      - {{ name: {name}, protocol: pop3, tls: none, server: \"{server}\", \
             username: {user}, password_file: password, auth_mode: PASS }}\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_password_stops_every_login_with_the_old_one() {
    let test = "a_reload_that_changes_the_password_stops_every_login_with_the_old_one";
    let Some(dovecot) = Dovecot::start_or_skip(Flavor::Plaintext, test) else {
        return;
    };
    let gate = Gate::start(dovecot.pop3_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "the-old-password\n").unwrap();
    let config_file = dir.path().join("config.yml");
    let names = early_names();
    std::fs::write(&config_file, config(&names, gate.addr, dovecot.user())).unwrap();

    let running = app::start(RunOptions {
        config_file,
        listen_address: "127.0.0.1:0".parse().unwrap(),
        web_config_file: None,
        shard: None,
        enable_lifecycle: false,
    })
    .await
    .expect("the exporter starts");
    until("two probes in flight at the gate", &dovecot, || {
        gate.held.load(Ordering::SeqCst) == PER_SERVER
    })
    .await;
    // The scheduler runs, so every first probe is due by now plus FIRST_PROBES_WITHIN: then
    // the other four wait for the server's two slots, with the old password.
    tokio::time::sleep(FIRST_PROBES_WITHIN).await;
    assert_eq!(gate.held.load(Ordering::SeqCst), PER_SERVER);

    // The password was changed on the server's side; the operator updates the file.
    std::fs::write(&password, format!("{}\n", dovecot.password())).unwrap();
    assert_eq!(running.reload().await.expect("a valid config"), ACCOUNTS);
    until("the probes in flight hang up", &dovecot, || {
        gate.abandoned.load(Ordering::SeqCst) == PER_SERVER
    })
    .await;

    gate.open();
    let logins = || {
        dovecot
            .log()
            .matches("pop3-login: Info: Login: user=<")
            .count()
    };
    until(
        "every account logged in with the new password",
        &dovecot,
        || logins() >= ACCOUNTS,
    )
    .await;
    let log = dovecot.log();
    assert_eq!(logins(), ACCOUNTS, "{log}");
    assert!(!log.contains("Password mismatch"), "{log}");
    assert!(!log.contains("auth failed"), "{log}");
    running.shutdown().await;
}
