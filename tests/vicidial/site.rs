//! A VICIdial site for the tests of the account source: a real MariaDB holding
//! `vicidial_email_accounts`, a config file whose `sources` reads it, and the exporter's binary
//! run on that config with its log kept, scraped over HTTP.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::support::MariaDb;
use crate::support::http::{self, Samples};

/// Waiting gives up after this long: a condition not met by then is a failure. Generous, as
/// several MariaDB servers and exporters share two cores in CI.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A MariaDB with VICIdial's table, and a directory for the exporter's files.
pub struct Site {
    pub db: MariaDb,
    pub dir: tempfile::TempDir,
}

impl Site {
    /// `None` (after a loud message) when MariaDB is not installed and peers are not required.
    pub fn start_or_skip(test: &str) -> Option<Site> {
        let db = MariaDb::start_or_skip(test)?;
        let dir = tempfile::tempdir().unwrap();
        Some(Site { db, dir })
    }

    /// Writes a config whose one source reads this site's table every second, logging in
    /// with host, port, user and `password_file`, with `extra` (YAML lines at the source's
    /// indentation) added, and returns its path.
    pub fn config(&self, extra: &str) -> PathBuf {
        let password = self.dir.path().join("db-password");
        std::fs::write(&password, self.db.password()).unwrap();
        self.write_config(
            &format!(
                "host: 127.0.0.1\n      port: {}\n      user: {}\n      password_file: {}",
                self.db.port(),
                self.db.user(),
                password.display(),
            ),
            extra,
        )
    }

    /// As [`Self::config`], logging in with the URL of a `dsn_file`.
    pub fn dsn_config(&self, extra: &str) -> PathBuf {
        let dsn = self.dir.path().join("vicidial-dsn");
        std::fs::write(&dsn, format!("{}\n", self.db.dsn())).unwrap();
        self.write_config(&format!("dsn_file: {}", dsn.display()), extra)
    }

    fn write_config(&self, database: &str, extra: &str) -> PathBuf {
        let text = format!(
            "# The simulators share 127.0.0.1 and some tests fail logins on purpose.\n\
             failure_budget: {{failures: 0}}\n\
             interval: 1s\ntimeout: 900ms\n\
             sources:\n  - vicidial:\n      {database}\n      refresh: 1s\n{extra}"
        );
        let path = self.dir.path().join("config.yml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The exporter's binary, running until dropped.
pub struct Exporter {
    pub addr: SocketAddr,
    /// Every line it logged so far (JSON, one per line).
    log: Arc<Mutex<String>>,
    child: tokio::process::Child,
}

impl Exporter {
    pub async fn start(config: &Path) -> Exporter {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"))
            .arg(format!("--config.file={}", config.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.format=json")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the exporter runs");
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let kept = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut exporter = Exporter {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            child,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        exporter.addr = loop {
            let found = exporter.messages().into_iter().find_map(|m| {
                m.strip_prefix("listening on ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = exporter.child.try_wait() {
                // Let the reader take the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "the exporter exited ({status}); its log:\n{}",
                    exporter.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the exporter did not listen; its log:\n{}",
                exporter.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        exporter
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The `message` of every line logged so far.
    pub fn messages(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
            .collect()
    }

    /// Log lines whose message is `message`.
    pub fn logged(&self, message: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v["fields"]["message"].as_str() == Some(message))
            .collect()
    }

    /// Successful logins of `account` so far, from the exporter's own line per probe (it
    /// runs at debug level): the metrics keep no per-account count of them.
    pub fn successes(&self, account: &str) -> f64 {
        self.logged("probe finished")
            .iter()
            .filter(|v| v["fields"]["account"] == account && v["fields"]["success"] == true)
            .count() as f64
    }

    pub async fn scrape(&self) -> Samples {
        http::scrape(self.addr).await
    }

    /// The body of `GET path`, which must answer 200.
    pub async fn page(&self, path: &str) -> String {
        let response = http::get(self.addr, path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        response.text()
    }

    /// Scrapes until `done` holds, or fails with the last scrape and the log.
    pub async fn wait(&self, what: &str, done: impl Fn(&Samples) -> bool) -> Samples {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let samples = self.scrape().await;
            if done(&samples) {
                return samples;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "gave up waiting for {what}; last scrape:\n{}\n--- log ---\n{}",
                    samples.text,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `error` of every "cannot be read" line the exporter logged, in order.
pub fn source_errors(exporter: &Exporter) -> Vec<String> {
    exporter
        .logged("account source cannot be read; its last accounts stay in force")
        .iter()
        .map(|line| line["fields"]["error"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Runs the exporter's binary with `args` to its end.
pub async fn run(args: &[String]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(PATIENCE, out)
        .await
        .expect("the command ends")
        .expect("the binary runs")
}

/// The sum of every series of `name` carrying all of `labels` (0 without any).
pub fn sum(s: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (series_name == name && all).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The source's gauge `name` (`up`, `accounts`, `skipped_rows`), for the `vicidial` source.
pub fn source(s: &Samples, name: &str) -> Option<f64> {
    s.get(&format!(
        "mailbox_exporter_source_{name}{{source=\"vicidial\"}}"
    ))
}

/// The values of label `key` over every series of `mailbox_account_info`.
pub fn info_labels(s: &Samples, key: &str) -> BTreeSet<String> {
    let prefix = format!("{key}=\"");
    s.text
        .lines()
        .filter_map(|line| line.strip_prefix("mailbox_account_info{"))
        .filter_map(|rest| {
            let at = rest
                .match_indices(&prefix)
                .find(|(i, _)| *i == 0 || rest[..*i].ends_with(','))?
                .0;
            let value = &rest[at + prefix.len()..];
            Some(value[..value.find('"')?].to_string())
        })
        .collect()
}

/// Whether any series at all carries `account="account"`.
pub fn has_series(s: &Samples, account: &str) -> bool {
    s.text.contains(&format!("account=\"{account}\""))
}

/// `BTreeSet` of `items`.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Fails if `text` (called `what`) holds any of `secrets`, as is or HTML-escaped.
pub fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        let escaped = secret
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            !text.contains(secret) && !text.contains(&escaped),
            "{what} holds a secret:\n{text}"
        );
    }
}

/// `html` with the entities the pages use turned back into characters.
pub fn unescape(html: &str) -> String {
    html.replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
