//! The binary against bad input and faulty files while it runs: a reload with an alias bomb or
//! a FIFO for a password file is refused quickly, the old config keeps running, a later
//! reload works, and SIGTERM still stops it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::alias_bomb;
use support::http::{self, Samples};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// Waiting gives up after this long: a condition not met by then is a failure.
const PATIENCE: Duration = Duration::from_secs(30);

/// Accounts on a port nobody listens on: probing them fails fast and harms no one.
fn config(accounts: &[(&str, &str)]) -> String {
    let mut text = String::from("interval: 5m\ngroups:\n  - name: g\n    accounts:\n");
    for (name, password) in accounts {
        text.push_str(&format!(
            "      - {{name: {name}, server: \"127.0.0.1:9\", tls: none, username: u, {password}}}\n"
        ));
    }
    text
}

/// The exporter's log, line by line, as JSON.
struct Log(mpsc::UnboundedReceiver<serde_json::Value>);

impl Log {
    /// The message of the next line whose message starts with `prefix`, skipping others.
    async fn next(&mut self, prefix: &str) -> String {
        tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.0.recv().await {
                let message = line["fields"]["message"].as_str().unwrap_or_default();
                if message.starts_with(prefix) {
                    return message.to_string();
                }
            }
            panic!("the exporter exited before logging {prefix:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line {prefix:?}"))
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn scrape(addr: SocketAddr) -> Samples {
    Samples::new(http::get(addr, "/metrics").await.text())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reloads_keep_the_old_config_and_sigterm_still_stops_the_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let config_file: PathBuf = dir.path().join("config.yaml");
    let pipe = dir.path().join("pipe");
    support::mkfifo(&pipe);
    write(&config_file, &config(&[("first", "password: p")]));

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"))
        .arg(format!("--config.file={}", config_file.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--log.format=json")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or_default());
        }
    });
    let mut log = Log(rx);
    let listening = log.next("listening on ").await;
    let addr: SocketAddr = listening
        .trim_start_matches("listening on ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let info = [("account", "first")];
    assert!(
        scrape(addr)
            .await
            .find("mailbox_account_info", &info)
            .is_some()
    );

    // An alias bomb: refused from the walk over its events, before anything is expanded.
    write(&config_file, &alias_bomb());
    signal(pid, "HUP");
    let error = log.next("config error: ").await;
    assert_eq!(
        error,
        format!(
            "config error: {}: cannot parse the config: the YAML holds more than 1000000 values \
             once its aliases are expanded; refused",
            config_file.display()
        )
    );
    log.next("config reload failed").await;
    let s = scrape(addr).await;
    assert_eq!(
        s.get("mailbox_exporter_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(
        s.find("mailbox_account_info", &info).is_some(),
        "{}",
        s.text
    );

    // A FIFO nobody writes to, as a password file: refused, not waited on.
    write(
        &config_file,
        &config(&[("first", "password: p"), ("second", "password_file: pipe")]),
    );
    signal(pid, "HUP");
    let error = log.next("config error: ").await;
    assert_eq!(
        error,
        format!(
            "config error: groups[0] \"g\" / accounts[1] \"second\": password_file: cannot read \
             {pipe:?}: not a regular file (a FIFO)"
        )
    );
    log.next("config reload failed").await;

    // The reloads after it work.
    std::fs::remove_file(&pipe).unwrap();
    write(&pipe, "p\n");
    signal(pid, "HUP");
    assert_eq!(
        log.next("config reloaded").await,
        "config reloaded: 2 accounts"
    );
    let s = scrape(addr).await;
    assert_eq!(
        s.get("mailbox_exporter_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(
        s.find("mailbox_account_info", &[("account", "second")])
            .is_some()
    );

    signal(pid, "TERM");
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("SIGTERM stops the exporter")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
