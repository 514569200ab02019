//! The deployment files under `deploy/` (Dockerfile, docker-compose, Kubernetes manifests,
//! systemd unit) pass `scripts/check-deploy`: hadolint, docker compose config, promtool,
//! amtool, kubernetes-validate, systemd-analyze and the exporter's own check-config.
//!
//! The tools are peers like Dovecot: `scripts/test` installs them; without them this test
//! says loudly that it skipped, or fails when peers are required.

mod support;

use std::path::Path;
use std::process::Command;

/// `scripts/check-deploy`'s exit status when a tool it needs is not installed.
const MISSING_TOOL: i32 = 3;

#[test]
fn deployment_files_pass_their_validators() {
    let test = "deploy::deployment_files_pass_their_validators";
    let Some(bash) = support::find_binary("bash") else {
        support::skip_or_panic(&format!(
            "SKIPPED (real peer missing): {test} needs bash; run scripts/test to run it"
        ));
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(bash)
        .arg(root.join("scripts/check-deploy"))
        // Installing is scripts/test's job; a test only looks.
        .arg("--no-install")
        .env(
            "MAILBOX_EXPORTER_BIN",
            env!("CARGO_BIN_EXE_mailbox_exporter"),
        )
        .current_dir(root)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(MISSING_TOOL) {
        support::skip_or_panic(&format!(
            "SKIPPED (real peer missing): {test}: {}; run scripts/test to run it",
            stderr
                .lines()
                .next()
                .unwrap_or("a validator is missing")
                .trim()
        ));
        return;
    }
    assert!(
        out.status.success(),
        "scripts/check-deploy failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
