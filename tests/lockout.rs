//! Never the cause of a lockout: a server that delays every rejection cannot keep the ladder
//! from the method that works, and failed logins per server stay within the failure budget,
//! counted by the simulator and by a real Dovecot's own log.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use mailbox_exporter::config::{Config, Format, RawConfig};
use mailbox_exporter::metrics::{Exposition, Store};
use mailbox_exporter::probe::{self, Meter, Steps, Target, TlsSettings};
use mailbox_exporter::schedule::{Ledger, NetworkProber, Prober, Scheduler};
use mailbox_exporter::secret::Password;
use mailbox_exporter::sim::{Behavior, SimServer, SimSpec};
use mailbox_exporter::state::AccountState;
use mailbox_exporter::tls::Connectors;
use mailbox_exporter::verdict::{
    Attempt, AttemptResult, AuthMode, Method, Protocol, Reason, TlsMode, Verdict,
};

use support::dovecot::{Dovecot, Flavor};

const USER: &str = "alice@example.com";
const PASSWORD: &str = "c0rrect horse";

fn target(port: u16, timeout: Duration) -> Target {
    Target {
        protocol: Protocol::Pop3,
        host: "127.0.0.1".into(),
        port,
        tls: TlsSettings {
            mode: TlsMode::None,
            verify: true,
            ca_file: None,
        },
        username: USER.into(),
        password: Password::new(PASSWORD),
        auth_mode: AuthMode::Best,
        timeout,
        oauth2: None,
    }
}

/// One probe as the scheduler runs it without a budget: the account's plan, then its state.
async fn probe_once(state: &mut AccountState, t: &Target) -> Verdict {
    let plan = state.plan();
    let steps = Steps {
        preferred: plan.preferred,
        last: plan.rejected,
        others: None,
    };
    let verdict = probe::probe_with(t, steps, &Connectors::new()).await;
    state.observe(verdict.clone(), SystemTime::now());
    verdict
}

fn commands_since(sim: &SimServer, from: usize) -> Vec<String> {
    sim.stats().commands[from..].to_vec()
}

/// The trap behind Dovecot's full penalty: each rejection answered after 15 s, a 30 s timeout.
/// The first probe times out after APOP (and maybe CRAM-MD5) was rejected; it remembers that,
/// so the second goes to the other rungs first and logs in with PASS, and the third goes
/// straight to PASS.
#[tokio::test(start_paused = true)]
async fn a_server_that_delays_each_rejection_cannot_hide_the_working_method() {
    let spec = SimSpec {
        rejection_delay: Duration::from_secs(15),
        ..SimSpec::new(Protocol::Pop3, TlsMode::None, Behavior::UnverifiableDigests)
    };
    let sim = SimServer::start(spec.user(USER, PASSWORD)).await.unwrap();
    let t = target(sim.port(), Duration::from_secs(30));
    let mut state = AccountState::new();

    let first = probe_once(&mut state, &t).await;
    assert!(!first.success, "{first:?}");
    assert_eq!(first.reason, Some(Reason::Timeout), "{first:?}");
    assert_eq!(
        first.attempts.first(),
        Some(&Attempt {
            method: Method::Apop,
            result: AttemptResult::Rejected
        }),
        "the verdict of a ladder that timed out still shows its rejections"
    );
    assert_eq!(
        state.consecutive_rejections(),
        1,
        "a timeout after a rejection"
    );
    assert!(state.plan().rejected.contains(Method::Apop));

    let second = probe_once(&mut state, &t).await;
    assert!(second.success, "{second:?}");
    assert_eq!(second.method, Some(Method::Pass));
    assert_ne!(
        second.attempts.first().map(|a| a.method),
        Some(Method::Apop),
        "a rejected rung is not tried first again"
    );
    assert_eq!(state.remembered(), Some(Method::Pass));
    assert_eq!(state.consecutive_rejections(), 0);

    let seen = sim.stats().commands.len();
    let third = probe_once(&mut state, &t).await;
    assert!(third.success, "{third:?}");
    assert_eq!(
        third.attempts,
        vec![Attempt {
            method: Method::Pass,
            result: AttemptResult::Success
        }]
    );
    let sent = commands_since(&sim, seen);
    assert!(
        !sent.iter().any(|c| c == "APOP" || c.starts_with("AUTH")),
        "the third probe sent {sent:?}"
    );
    // The trap is still reported, with the mode to pin, although no probe meets it now.
    for v in [&second, &third] {
        assert!(v.fallback, "{v:?}");
        let advice = v.advice.as_deref().unwrap_or_default();
        assert!(advice.contains("pin auth_mode: PASS"), "{advice}");
    }
    assert!(state.fallback());
}

fn config(yaml: &str) -> Config {
    RawConfig::parse(yaml, Format::Yaml, &HashMap::new())
        .and_then(|raw| raw.validate(Path::new("/"), &HashMap::new()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A config of `traps` accounts with the right password and `wrong` ones with a wrong one,
/// all of `user` on `port` of 127.0.0.1.
fn fleet(
    port: u16,
    user: &str,
    password: &str,
    traps: usize,
    wrong: usize,
    timing: &str,
) -> String {
    let mut yaml = format!(
        "{timing}\ndefaults: {{protocol: pop3, tls: none}}\ngroups:\n  - name: lockout\n    accounts:\n"
    );
    let quote = |s: &str| serde_json::to_string(s).unwrap();
    for i in 0..traps {
        yaml.push_str(&format!(
            "      - {{name: trap-{i}, server: \"127.0.0.1:{port}\", username: {}, password: {}}}\n",
            quote(user),
            quote(password)
        ));
    }
    for i in 0..wrong {
        yaml.push_str(&format!(
            "      - {{name: wrong-{i}, server: \"127.0.0.1:{port}\", username: {}, password: {}}}\n",
            quote(user),
            quote("not the password")
        ));
    }
    yaml
}

/// The exporter's scheduler and store, running `config` until dropped or stopped.
struct Exporter {
    store: Arc<Store>,
    exposition: Exposition,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _config: watch::Sender<Arc<Config>>,
}

impl Exporter {
    fn start(config: Config) -> Exporter {
        let store = Arc::new(Store::new());
        store.apply_config(&config);
        let config = Arc::new(config);
        let (config_tx, config_rx) = watch::channel(Arc::clone(&config));
        let (applied_tx, _) = watch::channel(config);
        let (stop, stop_rx) = watch::channel(false);
        let scheduler = Scheduler::new(Arc::clone(&store), Arc::new(NetworkProber::default()));
        let task = tokio::spawn(scheduler.run(config_rx, applied_tx, stop_rx));
        Exporter {
            exposition: Exposition::new(Arc::clone(&store)),
            store,
            stop,
            task,
            _config: config_tx,
        }
    }

    async fn stop(self) -> (Arc<Store>, Exposition) {
        let _ = self.stop.send(true);
        self.task.await.expect("the scheduler ends");
        (self.store, self.exposition)
    }
}

/// The most of `times` (seconds, ascending) that fall in any half-open window of `window`.
fn max_in_window(times: &[u64], window: u64) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

/// Against the simulator, on paused time: trap accounts and wrong passwords share one
/// server whose budget is 4 failures per minute. Failures (counted by the server, sampled
/// every second) never exceed the budget in any minute; accounts whose probe may fail wait,
/// visibly, while accounts with a method known to work go on being probed.
#[tokio::test(start_paused = true)]
async fn failed_logins_stay_within_the_budget_and_known_accounts_go_on() {
    let sim = SimServer::start(
        SimSpec::new(Protocol::Pop3, TlsMode::None, Behavior::UnverifiableDigests)
            .user(USER, PASSWORD),
    )
    .await
    .unwrap();
    let yaml = fleet(
        sim.port(),
        USER,
        PASSWORD,
        3,
        2,
        "interval: 10s\ntimeout: 5s\nfailure_budget: {failures: 4, window: 1m}",
    );
    let exporter = Exporter::start(config(&yaml));
    let store = Arc::clone(&exporter.store);

    let mut samples: Vec<(u64, u64)> = Vec::new();
    let t0 = Instant::now();
    let mut saw_waiting_while_known_probed = false;
    let all_done = |m: &Store| {
        let views = m.accounts();
        let traps_ok = views
            .iter()
            .filter(|v| v.account.starts_with("trap-"))
            .all(|v| v.success && v.method == Some(Method::Pass));
        let wrong_probed = views
            .iter()
            .filter(|v| v.account.starts_with("wrong-"))
            .all(|v| v.reason == Some(Reason::AuthRejected));
        traps_ok && wrong_probed
    };
    while !all_done(&store) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push((t0.elapsed().as_secs(), sim.stats().logins_rejected));
        let views = store.accounts();
        let waiting: Vec<_> = views.iter().filter(|v| v.budget_wait.is_some()).collect();
        if let Some(w) = waiting.first() {
            assert_eq!(w.budget_wait.as_deref(), Some("127.0.0.1"));
            let page = exporter.exposition.render();
            assert!(
                page.contains(
                    "mailbox_exporter_server_failure_budget_waiting_probes{server=\"127.0.0.1\"} "
                ),
                "{page}"
            );
            // An account that learned PASS is probed while others wait.
            let known: Vec<_> = views
                .iter()
                .filter(|v| v.success && v.budget_wait.is_none())
                .map(|v| (v.account.clone(), v.last_probe))
                .collect();
            if !known.is_empty() {
                tokio::time::sleep(Duration::from_secs(11)).await;
                let still_waiting = store
                    .account(&w.account)
                    .is_some_and(|v| v.budget_wait.is_some());
                let probed_again = known.iter().any(|(name, before)| {
                    store.account(name).map(|v| v.last_probe) != Some(*before)
                });
                saw_waiting_while_known_probed |= still_waiting && probed_again;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3600),
            "the fleet never settled: {:?}",
            store.accounts()
        );
    }
    let (_, exposition) = exporter.stop().await;
    assert!(
        saw_waiting_while_known_probed,
        "no probe waited for the budget while a known account was probed"
    );

    // Rejections per minute, from the server's own count.
    for (i, &(at, count)) in samples.iter().enumerate() {
        for &(later, later_count) in &samples[i..] {
            if later - at < 60 {
                assert!(
                    later_count - count <= 4,
                    "{} rejections between {at}s and {later}s",
                    later_count - count
                );
            }
        }
    }
    let exposition = exposition.render();
    assert!(
        exposition
            .contains("mailbox_exporter_server_failure_budget_remaining{server=\"127.0.0.1\"} "),
        "{exposition}"
    );
    assert!(
        exposition.contains("mailbox_exporter_server_failed_logins_total{server=\"127.0.0.1\"} "),
        "{exposition}"
    );
}

/// Dovecot's own log lines for failed logins: one per failed authentication (a password
/// mismatch, or a digest it cannot verify), and one per connection that ended without a
/// login after such a failure. Returns their times, seconds since midnight, ascending.
fn dovecot_failures(log: &str) -> Vec<u64> {
    let mut times: Vec<u64> = log
        .lines()
        .filter(|line| {
            line.contains("Password mismatch")
                || line.contains("unknown user")
                || (line.contains("Requested ") && line.contains(" scheme, but we have only"))
                || line.contains("(auth failed, ")
        })
        .filter_map(|line| {
            // "Nov 27 13:28:39 auth: Info: ..."
            let clock = line.split_whitespace().nth(2)?;
            let mut parts = clock.split(':').map(|p| p.parse::<u64>().ok());
            Some(parts.next()?? * 3600 + parts.next()?? * 60 + parts.next()??)
        })
        .collect();
    times.sort_unstable();
    times
}

/// The lines fail2ban's stock Dovecot filter counts: password mismatches and connections
/// that ended with "auth failed".
fn fail2ban_matches(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Password mismatch") || l.contains("(auth failed, "))
        .count()
}

struct Proof {
    max_in_window: usize,
    failures: usize,
    fail2ban: usize,
    logins: usize,
    charged: u64,
}

/// Runs the exporter against a real Dovecot with the trap (hashed passwords, APOP and
/// CRAM-MD5 offered) with `traps` right and `wrong` wrong passwords for `run_for`, or until
/// `done` holds, and counts failures in Dovecot's log.
async fn dovecot_proof(
    dovecot: &Dovecot,
    traps: usize,
    wrong: usize,
    timing: &str,
    window: u64,
    run_for: Duration,
    done: impl Fn(&Store) -> bool,
) -> Proof {
    let port = dovecot.pop3_addr().port();
    let yaml = fleet(
        port,
        dovecot.user(),
        dovecot.password(),
        traps,
        wrong,
        timing,
    );
    let exporter = Exporter::start(config(&yaml));
    let started = Instant::now();
    while !done(&exporter.store) && started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (store, _) = exporter.stop().await;
    let charged: u64 = store.budget().servers().iter().map(|b| b.charged).sum();
    // Dovecot writes its lines a moment after the connection closed.
    let settle = Instant::now();
    while dovecot_failures(&dovecot.log()).len() < charged as usize
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = dovecot.log();
    let times = dovecot_failures(&log);
    Proof {
        max_in_window: max_in_window(&times, window),
        failures: times.len(),
        fail2ban: fail2ban_matches(&log),
        logins: log
            .lines()
            .filter(|l| l.contains("-login: Info: Login: "))
            .count(),
        charged,
    }
}

/// The budget against a real Dovecot, scaled down: 4 failures per 10 s, three trap accounts
/// and two wrong passwords. Every trap account learns PASS and every wrong password is
/// reported, and Dovecot's log never shows more than 4 failures in any 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_never_sees_more_failures_than_the_budget() {
    let Some(dovecot) = Dovecot::start_or_skip(
        Flavor::Hashed,
        "dovecot_never_sees_more_failures_than_the_budget",
    ) else {
        return;
    };
    let done = |m: &Store| {
        m.accounts().iter().all(|v| {
            if v.account.starts_with("trap-") {
                v.success && v.method == Some(Method::Pass)
            } else {
                v.reason == Some(Reason::AuthRejected)
            }
        })
    };
    let proof = dovecot_proof(
        &dovecot,
        3,
        2,
        "interval: 6s\ntimeout: 5s\nfailure_budget: {failures: 4, window: 10s}",
        10,
        Duration::from_secs(300),
        done,
    )
    .await;
    println!(
        "failures in Dovecot's log: {} (most in any 10 s: {}, budget 4); charged: {}; \
         fail2ban filter matches: {}; logins: {}",
        proof.failures, proof.max_in_window, proof.charged, proof.fail2ban, proof.logins
    );
    assert!(proof.failures > 0, "{}", dovecot.log());
    assert!(proof.max_in_window <= 4, "{}", dovecot.log());
    // Equal when every probe got its answers; a probe cut short by its timeout is charged for
    // what it may have caused, so the budget never counts less than Dovecot.
    assert!(
        proof.failures as u64 <= proof.charged,
        "the budget charged less than Dovecot logged\n{}",
        dovecot.log()
    );
}

/// The proof at full scale with the default budget (4 failures in 10 minutes): 10 trap
/// accounts and 3 wrong passwords on one Dovecot for 15 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for 15 minutes"]
async fn dovecot_fifteen_minutes_at_the_default_budget() {
    let Some(dovecot) = Dovecot::start_or_skip(
        Flavor::Hashed,
        "dovecot_fifteen_minutes_at_the_default_budget",
    ) else {
        return;
    };
    let proof = dovecot_proof(
        &dovecot,
        10,
        3,
        "interval: 1m\ntimeout: 30s",
        600,
        Duration::from_secs(15 * 60),
        |_| false,
    )
    .await;
    println!(
        "15 minutes, 10 trap accounts, 3 wrong passwords, default budget 4 per 10 min:\n\
         failures in Dovecot's log: {}; most in any 10 minutes: {}; charged by the budget: {}; \
         fail2ban filter matches: {}; successful logins: {}",
        proof.failures, proof.max_in_window, proof.charged, proof.fail2ban, proof.logins
    );
    assert!(proof.max_in_window <= 4, "{}", dovecot.log());
}

/// Answers by account name, on virtual time: `known-*` log in with PASS, `wrong-*` have every
/// rung rejected. Records when each probe started and how it was told to walk its ladder.
#[derive(Default)]
struct ScriptedProber {
    calls: std::sync::Mutex<Vec<(String, Instant, Steps)>>,
}

impl Prober for ScriptedProber {
    fn probe(
        &self,
        target: Target,
        steps: Steps,
        _meter: Meter,
    ) -> mailbox_exporter::schedule::ProbeFuture {
        let name = target.username.clone();
        self.calls
            .lock()
            .unwrap()
            .push((name.clone(), Instant::now(), steps));
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let attempt = |method, result| Attempt { method, result };
            let (success, attempts) = if name.starts_with("known") {
                (true, vec![attempt(Method::Pass, AttemptResult::Success)])
            } else {
                let rungs = [Method::Apop, Method::CramMd5, Method::Pass];
                let tried = steps.others.unwrap_or(rungs.len()).min(rungs.len());
                let rejected = rungs[..tried]
                    .iter()
                    .map(|&m| attempt(m, AttemptResult::Rejected));
                (false, rejected.collect())
            };
            Verdict {
                success,
                method: success.then_some(Method::Pass),
                reason: (!success).then_some(Reason::AuthRejected),
                detail: None,
                fallback: false,
                cleartext: false,
                attempts,
                phases: Default::default(),
                cert_expiry: None,
                advice: None,
                transcript: Vec::new(),
            }
        })
    }
}

/// With one probe per server at a time, an account whose probe waits for the budget holds
/// nothing the account with a known method needs: that one is probed on every slot of its
/// interval, while the wrong password is tried once per budget window at most.
#[tokio::test(start_paused = true)]
async fn a_probe_waiting_for_the_budget_holds_no_server_slot() {
    let yaml = "interval: 1m\ntimeout: 30s\nper_server_concurrency: 1\n\
                failure_budget: {failures: 4, window: 10m}\n\
                groups:\n  - name: g\n    accounts:\n\
                \x20     - {name: known, server: mail.example.com, username: known, password: x}\n\
                \x20     - {name: wrong, server: mail.example.com, username: wrong, password: x}\n";
    let config = config(yaml);
    let store = Arc::new(Store::new());
    store.apply_config(&config);
    // "known" logged in with PASS before (say, before a restart of the scheduler).
    let known_account = config.find_account("known").unwrap().clone();
    let earlier = ScriptedProber::default()
        .probe(
            known_account.target.clone(),
            Steps::default(),
            Meter::default(),
        )
        .await;
    store.record(&known_account, earlier, SystemTime::now());
    let prober = Arc::new(ScriptedProber::default());
    let config = Arc::new(config);
    let (_config_tx, config_rx) = watch::channel(Arc::clone(&config));
    let (applied_tx, _) = watch::channel(config);
    let (stop, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let scheduler = Scheduler::new(Arc::clone(&store), Arc::clone(&prober))
        .with_wall_clock(t0, SystemTime::UNIX_EPOCH);
    let task = tokio::spawn(scheduler.run(config_rx, applied_tx, stop_rx));
    tokio::time::sleep(Duration::from_secs(45 * 60)).await;
    let _ = stop.send(true);
    task.await.unwrap();

    let calls = prober.calls.lock().unwrap().clone();
    let starts = |who: &str| -> Vec<Duration> {
        calls
            .iter()
            .filter(|(name, _, _)| name == who)
            .map(|(_, at, _)| *at - t0)
            .collect()
    };
    let known = starts("known");
    let wrong = starts("wrong");
    // The known account: first within the start-up minute, then on every slot of its
    // interval, never held up.
    assert!(known.len() >= 44, "{known:?}");
    assert!(known[0] <= Duration::from_secs(60), "{known:?}");
    for pair in known.windows(2).skip(1) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(60), "{known:?}");
    }
    // It tries PASS alone and reserves nothing.
    let known_steps: Vec<Steps> = calls
        .iter()
        .filter(|(name, _, _)| name == "known")
        .map(|(_, _, steps)| *steps)
        .collect();
    assert!(
        known_steps
            .iter()
            .all(|s| s.preferred == Some(Method::Pass) && s.others == Some(0)),
        "{known_steps:?}"
    );
    // The wrong password: each probe costs the whole budget (3 rejections and the aborted
    // login), so the next waits until they leave the window.
    assert!(wrong.len() >= 2, "{wrong:?}");
    for pair in wrong.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(10 * 60),
            "{wrong:?}"
        );
    }
    let budget = &store.budget().servers()[0];
    assert_eq!(budget.charged, 4 * wrong.len() as u64);
}
