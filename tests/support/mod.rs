//! Support shared by the integration tests: real peers (Dovecot, Cyrus, MariaDB, Prometheus)
//! and the policy for what a test does when a peer is not installed.
//!
//! Plain `cargo test` must stay usable on a machine without the peers, but a skipped test must
//! never look like a passed one: it says so loudly on stderr. `scripts/test` (and CI) set
//! `MAILBOX_EXPORTER_REQUIRE_PEERS=1`, which turns every skip into a failure.

// Each integration test crate compiles its own copy of this module and uses a different
// subset of it.
#![allow(dead_code, unused_imports)]

pub mod cyrus;
pub mod dovecot;
pub mod http;
pub mod mail;
pub mod mariadb;
pub mod oauth2_provider;
#[path = "../../benches/common/proc.rs"]
pub mod proc;
pub mod prometheus;

use std::env;
use std::path::{Path, PathBuf};

pub use cyrus::Cyrus;
pub use dovecot::{Dovecot, Flavor};
pub use mariadb::{MariaDb, Row, TableLock};
pub use oauth2_provider::OAuth2Provider;

/// Set to `1` to make a missing peer fail the test instead of skipping it.
pub const REQUIRE_PEERS_ENV: &str = "MAILBOX_EXPORTER_REQUIRE_PEERS";

/// An external program a test talks to, and where to get it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Binary looked up in `PATH`, then in the sbin directories.
    pub binary: &'static str,
    /// Debian packages that provide it.
    pub packages: &'static str,
}

pub const DOVECOT: Peer = Peer {
    binary: "dovecot",
    packages: "dovecot-core dovecot-pop3d dovecot-imapd",
};

pub const MARIADB: Peer = Peer {
    binary: "mariadbd",
    packages: "mariadb-server",
};

/// Makes a MariaDB data directory; comes with [`MARIADB`]'s package.
pub const MARIADB_INSTALL_DB: Peer = Peer {
    binary: "mariadb-install-db",
    packages: "mariadb-server",
};

/// The `mariadb` command-line client, which the MariaDB harness administers the server with.
pub const MARIADB_CLIENT: Peer = Peer {
    binary: "mariadb",
    packages: "mariadb-client",
};

pub const PROMETHEUS: Peer = Peer {
    binary: "prometheus",
    packages: "prometheus",
};

pub const PROMTOOL: Peer = Peer {
    binary: "promtool",
    packages: "prometheus",
};

/// Whether a missing peer must fail the test rather than skip it.
pub fn peers_required() -> bool {
    env::var(REQUIRE_PEERS_ENV).is_ok_and(|v| v == "1")
}

/// Finds `name` in `PATH`, then in the sbin directories, which a non-root `PATH` often lacks
/// although Debian installs `dovecot` there.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The message printed (or panicked with) when `test` cannot run for lack of `peer`.
pub fn missing_peer_message(peer: &Peer, test: &str) -> String {
    format!(
        "SKIPPED (real peer missing): {test} needs {binary} (apt-get install {packages}); \
         run scripts/test to run it",
        binary = peer.binary,
        packages = peer.packages,
    )
}

/// The path of `peer`'s binary, or `None` after telling stderr loudly that `test` is skipped.
/// Panics instead when peers are required.
pub fn peer_or_skip(peer: &Peer, test: &str) -> Option<PathBuf> {
    if let Some(path) = find_binary(peer.binary) {
        return Some(path);
    }
    skip_or_panic(&missing_peer_message(peer, test));
    None
}

/// Says loudly on stderr that a test is skipped for `message`'s reason, which should start
/// with `SKIPPED (real peer missing):`; panics instead when peers are required.
pub fn skip_or_panic(message: &str) {
    if peers_required() {
        panic!("{message} ({REQUIRE_PEERS_ENV}=1 makes a missing peer an error)");
    }
    // Uncaptured on purpose: `eprintln!` output of a passing test is hidden by the harness,
    // and a skip must be visible in a plain `cargo test` run.
    let banner = "!".repeat(78);
    std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("\n{banner}\n{message}\n{banner}\n").as_bytes(),
    )
    .ok();
}

/// `Some(path to dovecot)`, or `None` after a loud skip message (a panic when peers are required).
pub fn dovecot_or_skip(test: &str) -> Option<PathBuf> {
    peer_or_skip(&DOVECOT, test)
}

/// `Some(path to prometheus)`, or `None` after a loud skip message (a panic when peers are required).
pub fn prometheus_or_skip(test: &str) -> Option<PathBuf> {
    peer_or_skip(&PROMETHEUS, test)
}

/// `Some(path to promtool)`, or `None` after a loud skip message (a panic when peers are required).
pub fn promtool_or_skip(test: &str) -> Option<PathBuf> {
    peer_or_skip(&PROMTOOL, test)
}

/// The "billion laughs": nine levels of nine aliases, 10^9 strings once expanded.
pub fn alias_bomb() -> String {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (name, prev) in "bcdefghi".chars().zip("abcdefgh".chars()) {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    text
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A file holding the simulator's certificate, written once per test binary and kept for
/// its lifetime: the CA file that probes of a simulated TLS server trust.
pub fn sim_ca_file() -> PathBuf {
    static PATH: std::sync::OnceLock<tempfile::TempPath> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            &mailbox_exporter::sim::sim_certificate().cert_pem,
        )
        .unwrap();
        file.into_temp_path()
    })
    .to_path_buf()
}
