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

/// Servers of providers that take only OAuth2 over POP3 and IMAP (Microsoft 365, Outlook.com,
/// Google), whether or not their capabilities were read.
const OAUTH2_ONLY_HOSTS: [&str; 8] = [
    "outlook.office365.com",
    "outlook.office.com",
    "imap-mail.outlook.com",
    "pop-mail.outlook.com",
    "imap.gmail.com",
    "pop.gmail.com",
    "imap.googlemail.com",
    "pop.googlemail.com",
];

/// A password login here is refused because the provider wants OAuth2: the server offered
/// XOAUTH2/OAUTHBEARER, or it is a known OAuth2-only host.
fn wants_oauth2(f: &Facts<'_>) -> bool {
    let host = f.target.host.trim_end_matches('.').to_ascii_lowercase();
    f.target.oauth2.is_none() && (f.oauth_offered || OAUTH2_ONLY_HOSTS.contains(&host.as_str()))
}

const USE_OAUTH2: &str = "give the account OAuth2 credentials (the oauth2: key: grant \
    client_credentials for Microsoft 365 app-only access, refresh_token for Google) or, where \
    the provider still allows it, an app password";

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
            let what = if t.oauth2.is_some() {
                "the OAuth2 token"
            } else {
                "the password"
            };
            out.push(format!(
                "{what} crossed the network unencrypted; set tls: starttls or tls: implicit"
            ));
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
            if wants_oauth2(f) {
                let why = if f.oauth_offered {
                    "the server offers OAuth2 (XOAUTH2/OAUTHBEARER)"
                } else {
                    "this provider takes only OAuth2 over POP3/IMAP"
                };
                out.push(format!(
                    "the password was refused and {why}: providers such as Microsoft 365 and \
                     Google refuse passwords for POP/IMAP, so the password is likely not the \
                     problem; {USE_OAUTH2}"
                ));
            } else if pinned_shared_secret {
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
        }
        Reason::PlaintextDisallowed => out.push(
            "the server takes logins only over TLS (a configuration matter, not the password); \
             set tls: starttls or tls: implicit"
                .into(),
        ),
        Reason::MechanismUnavailable => out.push(match (t.protocol, t.auth_mode) {
            _ if t.oauth2.is_some() => match t.auth_mode.pinned() {
                Some(m) if m.is_oauth2() => format!(
                    "the server refused {m}; set auth_mode: BEST to use the OAuth2 mechanism \
                     it offers"
                ),
                Some(_) => "this account logs in with OAuth2: set auth_mode: BEST, XOAUTH2 or \
                            OAUTHBEARER"
                    .into(),
                None => "the server offers neither OAUTHBEARER nor XOAUTH2, so this OAuth2 \
                         account cannot log in: check server (a provider's OAuth2 host, e.g. \
                         outlook.office365.com or imap.gmail.com)"
                    .into(),
            },
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
            _ if wants_oauth2(f) => {
                format!("the server accepts only OAuth2, not a password; {USE_OAUTH2}")
            }
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
        Reason::TokenRejected => out.push(
            "the server refused the OAuth2 token (a fresh one was refused too): check that the \
             app has mailbox access (Microsoft 365: the IMAP.AccessAsApp/POP.AccessAsApp \
             permission with admin consent, and an Exchange service principal with FullAccess \
             to this mailbox; Google: the https://mail.google.com/ scope), that the token's \
             scope fits the server, that username is the mailbox's address, and that the grant \
             was not revoked"
                .into(),
        ),
        Reason::TokenUnavailable => out.push(
            "no OAuth2 token could be obtained, so no login was tried: check the token \
             endpoint URL (tenant), client id and secret, refresh token or token file, and \
             that this host reaches the endpoint over HTTPS (the detail carries the \
             provider's error)"
                .into(),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Account;

    fn advice(host: &str, oauth_offered: bool) -> String {
        let mut target = Account::for_test("g", "a", Protocol::Imap).target;
        target.host = host.into();
        let attempts = [Attempt {
            method: Method::Plain,
            result: AttemptResult::Rejected,
        }];
        advise(&Facts {
            target: &target,
            success: false,
            method: None,
            reason: Some(Reason::AuthRejected),
            fallback: false,
            cleartext: false,
            attempts: &attempts,
            oauth_offered,
        })
        .unwrap()
    }

    #[test]
    fn a_refused_password_at_an_oauth2_provider_is_not_a_wrong_password() {
        for (host, offered) in [
            ("mail.example.com", true),
            ("outlook.office365.com", false),
            ("IMAP.gmail.com.", false),
        ] {
            let a = advice(host, offered);
            assert!(a.contains("oauth2:") && a.contains("app password"), "{a}");
            assert!(!a.contains("check the username and password"), "{a}");
        }
        let a = advice("mail.example.com", false);
        assert!(a.contains("check the username and password"), "{a}");
        assert!(!a.contains("oauth2"), "{a}");
    }
}
