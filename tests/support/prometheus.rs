//! A real Prometheus for the tests: started on a free loopback port with a temporary config and
//! storage, queried through its HTTP API, killed on drop. Also runs `promtool`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http;

/// The repository's root, where `deploy/` and `dashboards/` are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `promtool args...` in `dir` and panics with its whole output unless it succeeds.
pub fn promtool(promtool: &Path, dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// `rules` (the text of a rule file) with every `for:` set to `duration`, so that a test waits
/// seconds for what production waits minutes for. Rule files keep `for:` on a line of its own.
pub fn with_for(rules: &str, duration: &str) -> String {
    let mut out = String::with_capacity(rules.len());
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("for:") {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}for: {duration}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    /// Config, rules and storage; removed on drop.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `target` (job `mailbox_exporter`) every second and evaluating
    /// `rules` every second, and waits until its API answers.
    pub async fn start(binary: &Path, target: SocketAddr, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: mailbox_exporter\n    static_configs:\n      \
             - targets: [\"{target}\"]\n"
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && http::get(self.addr, "/-/ready").await.status == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus did not get ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` of the API, parsed; panics unless the body is JSON.
    pub async fn api(&self, path: &str) -> Value {
        let response = http::get(self.addr, path).await;
        serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!("{path}: not JSON ({e}): {}", response.text());
        })
    }

    /// An instant query: `Ok(result vector)`, or `Err(error)` when Prometheus refused it.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let body = self
            .api(&format!("/api/v1/query?query={}", url_encode(expr)))
            .await;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match &body["data"]["result"] {
            Value::Array(result) => Ok(result.clone()),
            // A scalar or a string: data as well.
            other => Ok(vec![other.clone()]),
        }
    }

    /// The `job="mailbox_exporter"` target's health (`up`, `down`, `unknown`), if it is known.
    pub async fn target_health(&self) -> Option<String> {
        let body = self.api("/api/v1/targets").await;
        body["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["labels"]["job"] == "mailbox_exporter")
            .and_then(|t| t["health"].as_str().map(str::to_string))
    }

    /// Every active alert (pending or firing).
    pub async fn alerts(&self) -> Vec<Value> {
        let body = self.api("/api/v1/alerts").await;
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every loaded rule, from every group.
    pub async fn rules(&self) -> Vec<Value> {
        let body = self.api("/api/v1/rules").await;
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but the unreserved characters, for a query string.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
