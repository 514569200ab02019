//! What to tell the operator after a probe: the one change that would help, in a sentence.

use crate::verdict::{Attempt, AttemptResult, AuthMode, Method, Protocol, Reason, TlsMode};

use super::Target;

pub(crate) struct Facts<'a> {
    pub target: &'a Target,
    pub success: bool,
    pub method: Option<Method>,
    pub reason: Option<Reason>,
    pub fallback: bool,
    pub cleartext: bool,
    pub attempts: &'a [Attempt],
    pub oauth_offered: bool,
}

fn rejected(attempts: &[Attempt]) -> Vec<Method> {
    attempts
        .iter()
        .filter(|a| a.result == AttemptResult::Rejected)
        .map(|a| a.method)
        .collect()
}

fn names(methods: &[Method]) -> String {
    methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

pub(crate) fn advise(f: &Facts<'_>) -> Option<String> {
    let t = f.target;
    let mut out: Vec<String> = Vec::new();
    if f.success {
        if f.fallback {
            let refused = names(&rejected(f.attempts));
            let method = f.method.map(|m| m.as_str()).unwrap_or("?");
            match t.protocol {
                Protocol::Pop3 => out.push(format!(
                    "{refused} advertised but rejected (the server likely stores hashed \
                     passwords and cannot verify {}); pin auth_mode: {method} so that no \
                     failed login precedes every check",
                    if rejected(f.attempts).len() > 1 {
                        "them"
                    } else {
                        "it"
                    }
                )),
                Protocol::Imap => out.push(format!(
                    "the server advertises {refused} but rejected it (likely hashed passwords); \
                     logged in with {method}; ask the mail admin to stop advertising {refused}"
                )),
            }
        }
        if f.cleartext {
            out.push(
                "the password crossed the network unencrypted; set tls: starttls or tls: implicit"
                    .into(),
            );
        }
        if !t.tls.verify && t.tls.mode != TlsMode::None {
            out.push(
                "the certificate is not verified (tls_verify: false); set ca_file to the \
                 server's CA instead"
                    .into(),
            );
        }
        return join(out);
    }
    match f.reason? {
        Reason::AuthRejected => {
            let refused = rejected(f.attempts);
            let pinned_shared_secret = t.protocol == Protocol::Pop3
                && matches!(t.auth_mode, AuthMode::Apop | AuthMode::CramMd5);
            if pinned_shared_secret {
                out.push(format!(
                    "{} was rejected; if the password is right the server may be unable to \
                     verify {} (hashed passwords): try `probe --auth-mode=PASS`, then pin \
                     auth_mode: PASS or BEST",
                    t.auth_mode, t.auth_mode
                ));
            } else {
                out.push(format!(
                    "{} rejected: check the username and password (and whether the account \
                     is locked or expired)",
                    if refused.len() > 1 {
                        format!("every method ({})", names(&refused))
                    } else {
                        names(&refused)
                    }
                ));
            }
            if f.oauth_offered {
                out.push(
                    "the server offers OAuth2 (XOAUTH2/OAUTHBEARER): providers such as \
                     Microsoft 365 and Google refuse passwords for POP/IMAP; the account may \
                     need OAuth2 or an app password"
                        .into(),
                );
            }
        }
        Reason::PlaintextDisallowed => out.push(
            "the server takes logins only over TLS (a configuration matter, not the password); \
             set tls: starttls or tls: implicit"
                .into(),
        ),
        Reason::MechanismUnavailable => out.push(match (t.protocol, t.auth_mode) {
            (Protocol::Pop3, AuthMode::Apop) if t.tls.mode == TlsMode::Starttls => {
                "APOP needs a greeting read over TLS, which only tls: implicit gives (POP3 \
                 sends none after STLS): use tls: implicit for APOP, or another auth_mode \
                 (BEST, CRAM-MD5 or PASS)"
                    .into()
            }
            (Protocol::Pop3, AuthMode::Apop | AuthMode::CramMd5) => format!(
                "the server does not offer {}; set auth_mode: BEST (or PASS)",
                t.auth_mode
            ),
            _ if f.oauth_offered => "the server accepts only OAuth2; this account cannot be \
                                     checked with a password"
                .into(),
            _ => "the server offers no login method this exporter can use".into(),
        }),
        Reason::ServerBusy => out.push(
            "the server is up but would not serve this login now (busy, mailbox locked by \
             another session, or a login delay); not a credentials problem"
                .into(),
        ),
        Reason::ServerError => {
            out.push("the server reports a fault of its own; tell the mail admin".into())
        }
        Reason::Timeout => out.push(
            "the server did not answer in time; check that it is up and not rate-limiting this \
             host (fail2ban), or raise timeout"
                .into(),
        ),
        Reason::Connect => out.push(
            "the TCP connection failed; check server, port, firewall and that the service runs"
                .into(),
        ),
        Reason::Dns => out.push("the server name does not resolve; check server".into()),
        Reason::Tls => out.push(match t.tls.mode {
            TlsMode::Starttls => "TLS failed; if the server uses a private CA set ca_file; if \
                                  it offers no STARTTLS, use tls: implicit"
                .into(),
            _ => "TLS failed; check the port speaks TLS (tls: implicit) and the certificate; \
                  for a private CA set ca_file (tls_verify: false only as a last resort)"
                .into(),
        }),
        Reason::Preauth => out.push(match t.tls.mode {
            TlsMode::Starttls => "the server (or something between it and this host) skipped \
                                  the login with PREAUTH before STARTTLS, the STARTTLS-bypass \
                                  attack: check the network path and the server, and use \
                                  tls: implicit"
                .into(),
            _ => "the server pre-authenticates connections, so no password is checked: point \
                  server at a port that asks for a login, or ask the mail admin"
                .into(),
        }),
        Reason::Protocol => out.push(format!(
            "the server did not speak {} as expected; check server and port (and tls)",
            t.protocol.as_str().to_ascii_uppercase()
        )),
    }
    join(out)
}

fn join(parts: Vec<String>) -> Option<String> {
    (!parts.is_empty()).then(|| parts.join("; "))
}
