//! Build-time facts for `mailbox_exporter_build_info`: the git commit (short) and the Rust
//! compiler's version. A build outside a git checkout takes the revision from
//! `MAILBOX_EXPORTER_REVISION` (the container build's `REVISION`), else says `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rerun-if-env-changed=MAILBOX_EXPORTER_REVISION");
    let revision = run("git", &["rev-parse", "--short", "HEAD"]);
    if revision.is_some() {
        // HEAD moves on checkout; the branch it points to moves on commit. Each path is
        // watched only when it exists: a missing one would rebuild the crate every time.
        let mut watched = vec![run("git", &["rev-parse", "--git-path", "HEAD"])];
        if let Some(branch) = run("git", &["symbolic-ref", "-q", "HEAD"]) {
            watched.push(run("git", &["rev-parse", "--git-path", &branch]));
        }
        watched.push(run("git", &["rev-parse", "--git-path", "packed-refs"]));
        for path in watched.into_iter().flatten() {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // `rustc 1.95.0 (hash date)`: the version is the second word.
    let rust_version =
        run(&rustc, &["--version"]).and_then(|v| v.split_whitespace().nth(1).map(str::to_string));
    println!(
        "cargo:rustc-env=MAILBOX_EXPORTER_REVISION={}",
        revision
            .or_else(given_revision)
            .as_deref()
            .unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=MAILBOX_EXPORTER_RUST_VERSION={}",
        rust_version.as_deref().unwrap_or("unknown")
    );
}

/// The revision a build outside a git checkout is told (the container build passes its
/// `REVISION` argument): a short hex commit, or nothing.
fn given_revision() -> Option<String> {
    let given = std::env::var("MAILBOX_EXPORTER_REVISION").ok()?;
    let given = given.trim();
    let commit =
        !given.is_empty() && given.len() <= 40 && given.bytes().all(|b| b.is_ascii_hexdigit());
    commit.then(|| given.chars().take(12).collect())
}

/// The trimmed standard output of a command that succeeded.
fn run(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_string())
}
