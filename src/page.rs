//! The HTML pages: the landing page (every account, its status and what to change) and one
//! page per account with its last verdict and redacted transcript. Pure functions over
//! [`AccountView`]s; every piece of text is escaped, nothing is loaded from elsewhere.
//!
//! Links are relative (`metrics`, `accounts/NAME`), so the pages also work behind a reverse
//! proxy that serves the exporter under a path prefix.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::metrics::AccountView;
use crate::verdict::Phase;

/// Exporter-wide facts shown on the landing page.
#[derive(Debug, Clone)]
pub struct PageInfo<'a> {
    pub version: &'a str,
    pub config_file: Option<String>,
    /// `i/n` when this replica probes one shard of the accounts.
    pub shard: Option<String>,
    pub last_reload_ok: bool,
    /// The page's "now", for the age of the last probes.
    pub now: SystemTime,
    /// Each account source's state, by name.
    pub sources: Vec<(String, crate::source::Status)>,
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}\
.ok{color:#146c2e;font-weight:bold}.failing{color:#b00020;font-weight:bold}\
.idle{color:#777}.flag{background:#fff3cd;border-radius:3px;padding:0 .3em;margin-right:.3em}\
.detail{color:#555;font-size:.9em}\
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}";

/// Appends `text` with `&<>"'` escaped.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `text` escaped for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// `segment` percent-encoded as one URL path segment: everything but RFC 3986's unreserved
/// characters is encoded, so `/`, `?` and `#` in an account name stay inside the segment.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The relative link from the landing page to an account's page.
pub fn account_href(name: &str) -> String {
    format!("accounts/{}", encode_path_segment(name))
}

fn head(out: &mut String, title: &str) {
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
    escape_into(out, title);
    out.push_str("</title>\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n");
}

fn status(view: &AccountView) -> (&'static str, &'static str) {
    match (view.probed, view.success) {
        (false, _) => ("idle", "not probed yet"),
        (true, true) => ("ok", "OK"),
        (true, false) => ("failing", "FAILING"),
    }
}

fn age(now: SystemTime, then: Option<SystemTime>) -> String {
    match then {
        None => "never".to_owned(),
        Some(then) => {
            let secs = now.duration_since(then).unwrap_or_default().as_secs();
            format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(secs))
            )
        }
    }
}

fn time(at: Option<SystemTime>) -> String {
    at.map_or_else(
        || "never".to_owned(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

fn flags_into(out: &mut String, view: &AccountView) {
    if view.fallback {
        out.push_str(
            "<span class=\"flag\" title=\"works only after an advertised method was rejected\">\
             fallback</span>",
        );
    }
    if view.cleartext {
        out.push_str(
            "<span class=\"flag\" title=\"the password crossed the network unencrypted\">\
             cleartext</span>",
        );
    }
    if view.backoff {
        let _ = write!(
            out,
            "<span class=\"flag\" title=\"probing slowed down after repeated rejections\">\
             backoff x{}</span>",
            view.backoff_factor
        );
    }
    if let Some(server) = &view.budget_wait {
        out.push_str(
            "<span class=\"flag\" title=\"the next probe may try methods not known to work, \
             and waits until the server's failed-login budget has room\">waiting for the \
             failure budget of ",
        );
        escape_into(out, server);
        out.push_str("</span>");
    }
}

fn method_into(out: &mut String, view: &AccountView) {
    match (view.method, view.last_success_method) {
        (Some(m), _) => out.push_str(m.as_str()),
        (None, Some(m)) => {
            let _ = write!(out, "<span class=\"idle\">last worked: {m}</span>");
        }
        (None, None) => {}
    }
}

/// The landing page: a summary per group, then every account with its status, method, last
/// failure, flags and the recommendation of its last probe.
/// The account sources' table; nothing without sources.
fn sources(out: &mut String, info: &PageInfo<'_>) {
    if info.sources.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Account sources</h2>\n<table>\n<tr><th>Source</th><th>State</th><th>Accounts</th>\
         <th>Skipped rows</th><th>Last read</th></tr>\n",
    );
    for (name, status) in &info.sources {
        out.push_str("<tr><td>");
        escape_into(out, name);
        out.push_str("</td><td>");
        match &status.error {
            None if status.up => out.push_str("<span class=\"ok\">read</span>"),
            None => out.push_str("not read yet"),
            Some(why) => {
                out.push_str(
                    "<span class=\"failing\">cannot be read</span> (its last accounts stay \
                     probed): ",
                );
                escape_into(out, why);
            }
        }
        let _ = writeln!(
            out,
            "</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            status.accounts,
            status.skipped,
            age(info.now, status.last_success)
        );
    }
    out.push_str("</table>\n");
}

pub fn landing(views: &[AccountView], info: &PageInfo<'_>) -> String {
    let mut out = String::with_capacity(4096 + views.len() * 600);
    head(&mut out, "mailbox_exporter");
    out.push_str("<h1>mailbox_exporter</h1>\n<p>Version ");
    escape_into(&mut out, info.version);
    out.push_str(
        ". <a href=\"metrics\">Metrics</a> · <a href=\"-/healthy\">Health</a> · \
         <a href=\"-/ready\">Readiness</a></p>\n<p>Configuration: ",
    );
    match &info.config_file {
        Some(file) => {
            out.push_str("<code>");
            escape_into(&mut out, file);
            out.push_str("</code>");
        }
        None => out.push_str("built in"),
    }
    if let Some(shard) = &info.shard {
        out.push_str(", shard <code>");
        escape_into(&mut out, shard);
        out.push_str("</code>");
    }
    if info.last_reload_ok {
        out.push_str(", last load succeeded.</p>\n");
    } else {
        out.push_str(
            ", <span class=\"failing\">last reload failed</span>: the previous configuration \
             is still in use.</p>\n",
        );
    }

    sources(&mut out, info);

    let groups = group_slices(views);
    if groups.is_empty() {
        out.push_str("<p>No accounts are configured.</p>\n</body>\n</html>\n");
        return out;
    }

    out.push_str(
        "<h2>Groups</h2>\n<table>\n<tr><th>Group</th><th>Accounts</th><th>Authenticated</th>\
         <th>Failing</th><th>Not probed yet</th></tr>\n",
    );
    for (group, accounts) in &groups {
        let authenticated = accounts.iter().filter(|v| v.probed && v.success).count();
        let failing = accounts.iter().filter(|v| v.probed && !v.success).count();
        let idle = accounts.iter().filter(|v| !v.probed).count();
        out.push_str("<tr><td><a href=\"#group-");
        out.push_str(&encode_path_segment(group));
        out.push_str("\">");
        escape_into(&mut out, group);
        let _ = writeln!(
            out,
            "</a></td><td>{}</td><td>{authenticated}</td><td>{failing}</td><td>{idle}</td></tr>",
            accounts.len()
        );
    }
    out.push_str("</table>\n");

    for (group, accounts) in &groups {
        out.push_str("<h2 id=\"group-");
        out.push_str(&encode_path_segment(group));
        out.push_str("\">Group ");
        escape_into(&mut out, group);
        out.push_str(
            "</h2>\n<table>\n<tr><th>Account</th><th>Protocol</th><th>Server</th><th>TLS</th>\
             <th>Auth mode</th><th>Status</th><th>Method</th><th>Last failure</th>\
             <th>Flags</th><th>Last probe</th><th>Recommendation</th></tr>\n",
        );
        for view in accounts.iter() {
            account_row(&mut out, view, info.now);
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn account_row(out: &mut String, view: &AccountView, now: SystemTime) {
    out.push_str("<tr><td><a href=\"");
    out.push_str(&account_href(&view.account));
    out.push_str("\">");
    escape_into(out, &view.account);
    let _ = write!(out, "</a></td><td>{}</td><td>", view.protocol);
    escape_into(out, &view.server);
    let _ = write!(out, "</td><td>{}</td><td>{}</td>", view.tls, view.auth_mode);
    let (class, label) = status(view);
    let _ = write!(out, "<td class=\"{class}\">{label}</td><td>");
    method_into(out, view);
    out.push_str("</td><td>");
    if let Some(reason) = view.reason {
        out.push_str(reason.as_str());
        if let Some(detail) = &view.detail {
            out.push_str("<br><span class=\"detail\">");
            escape_into(out, detail);
            out.push_str("</span>");
        }
    }
    out.push_str("</td><td>");
    flags_into(out, view);
    out.push_str("</td><td>");
    out.push_str(&age(now, view.last_probe));
    out.push_str("</td><td>");
    if let Some(advice) = &view.advice {
        escape_into(out, advice);
    }
    out.push_str("</td></tr>\n");
}

/// Views split into runs of one group; [`crate::metrics::Store::accounts`] orders them by
/// group already.
fn group_slices(views: &[AccountView]) -> Vec<(&str, &[AccountView])> {
    let mut groups = Vec::new();
    let mut rest = views;
    while let Some(first) = rest.first() {
        let len = rest
            .iter()
            .position(|v| v.group != first.group)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(len);
        groups.push((first.group.as_str(), run));
        rest = tail;
    }
    groups
}

fn fact(out: &mut String, name: &str, value: &str) {
    out.push_str("<tr><th>");
    out.push_str(name);
    out.push_str("</th><td>");
    escape_into(out, value);
    out.push_str("</td></tr>\n");
}

/// One account: its settings, the last verdict, the rungs tried, the phases and the redacted
/// transcript of the last probe.
pub fn account_page(view: &AccountView) -> String {
    let mut out =
        String::with_capacity(4096 + view.transcript.iter().map(|l| l.len() + 8).sum::<usize>());
    head(&mut out, &format!("{} - mailbox_exporter", view.account));
    out.push_str("<p><a href=\"../\">All accounts</a></p>\n<h1>");
    escape_into(&mut out, &view.account);
    out.push_str("</h1>\n<table>\n");
    fact(&mut out, "Group", &view.group);
    fact(&mut out, "Protocol", view.protocol.as_str());
    fact(&mut out, "Server", &view.server);
    fact(&mut out, "TLS", view.tls.as_str());
    fact(&mut out, "Auth mode", view.auth_mode);
    fact(
        &mut out,
        "Interval",
        &humantime::format_duration(view.interval).to_string(),
    );
    if let crate::config::Origin::Vicidial(row) = &view.origin {
        fact(
            &mut out,
            "Defined in",
            &format!(
                "VICIdial source {:?}: email account {} ({:?}, user group {:?}), checked by \
                 VICIdial every {} min",
                row.source,
                view.account,
                row.email_account_name,
                row.user_group,
                row.frequency_check_mins
            ),
        );
    }
    let (class, label) = status(view);
    let _ = writeln!(
        out,
        "<tr><th>Status</th><td class=\"{class}\">{label}</td></tr>"
    );
    out.push_str("<tr><th>Method</th><td>");
    method_into(&mut out, view);
    out.push_str("</td></tr>\n");
    fact(
        &mut out,
        "Failure reason",
        view.reason.map_or("", |r| r.as_str()),
    );
    fact(
        &mut out,
        "Failure detail",
        view.detail.as_deref().unwrap_or(""),
    );
    fact(
        &mut out,
        "Recommendation",
        view.advice.as_deref().unwrap_or(""),
    );
    out.push_str("<tr><th>Flags</th><td>");
    flags_into(&mut out, view);
    out.push_str("</td></tr>\n");
    fact(
        &mut out,
        "Consecutive failures",
        &view.consecutive_failures.to_string(),
    );
    fact(&mut out, "Last probe", &time(view.last_probe));
    fact(&mut out, "Last success", &time(view.last_success));
    if let Some(expiry) = view.cert_expiry {
        let at = crate::verdict::expiry_time(expiry);
        fact(&mut out, "Certificate expires", &time(at));
    }
    out.push_str("</table>\n");

    if !view.probed {
        out.push_str("<p>Not probed yet.</p>\n</body>\n</html>\n");
        return out;
    }

    out.push_str("<h2>Methods tried</h2>\n");
    if view.attempts.is_empty() {
        out.push_str("<p>None: the probe ended before any login.</p>\n");
    } else {
        out.push_str("<table>\n<tr><th>Method</th><th>Result</th></tr>\n");
        for attempt in &view.attempts {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                attempt.method,
                attempt.result.as_str()
            );
        }
        out.push_str("</table>\n");
    }

    out.push_str("<h2>Phases</h2>\n<table>\n<tr>");
    for phase in Phase::ALL {
        let _ = write!(out, "<th>{phase}</th>");
    }
    out.push_str("</tr>\n<tr>");
    for phase in Phase::ALL {
        let _ = write!(out, "<td>{} ms</td>", view.phases.get(phase).as_millis());
    }
    out.push_str("</tr>\n</table>\n");

    out.push_str("<h2>Transcript (secrets redacted)</h2>\n<pre>");
    for line in &view.transcript {
        escape_into(&mut out, line);
        out.push('\n');
    }
    out.push_str("</pre>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Attempt, AttemptResult, Method, Phases, Protocol, Reason, TlsMode};

    fn view(group: &str, account: &str) -> AccountView {
        AccountView {
            group: group.into(),
            account: account.into(),
            protocol: Protocol::Pop3,
            server: "mail.example.com:995".into(),
            tls: TlsMode::Implicit,
            auth_mode: "BEST",
            interval: Duration::from_secs(300),
            origin: crate::config::Origin::File,
            probed: false,
            success: false,
            method: None,
            last_success_method: None,
            reason: None,
            detail: None,
            advice: None,
            fallback: false,
            cleartext: false,
            backoff: false,
            backoff_factor: 1,
            consecutive_failures: 0,
            last_probe: None,
            last_success: None,
            cert_expiry: None,
            phases: Phases::default(),
            transcript: Vec::new(),
            attempts: Vec::new(),
            budget_wait: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn trapped(group: &str, account: &str) -> AccountView {
        AccountView {
            probed: true,
            success: true,
            method: Some(Method::Pass),
            last_success_method: Some(Method::Pass),
            advice: Some(
                "APOP advertised but rejected (the server cannot verify it); pin auth_mode: PASS"
                    .into(),
            ),
            fallback: true,
            last_probe: Some(at(1_700_000_000)),
            last_success: Some(at(1_700_000_000)),
            attempts: vec![
                Attempt {
                    method: Method::Apop,
                    result: AttemptResult::Rejected,
                },
                Attempt {
                    method: Method::Pass,
                    result: AttemptResult::Success,
                },
            ],
            transcript: vec![
                "S: +OK ready <1.2@mail.example.com>".into(),
                "C: APOP support@example.com ***".into(),
                "S: -ERR [AUTH] authentication failed".into(),
                "C: PASS ***".into(),
                "S: +OK logged in".into(),
            ],
            ..view(group, account)
        }
    }

    fn info() -> PageInfo<'static> {
        PageInfo {
            version: "0.1.0",
            config_file: Some("/etc/mailbox_exporter.yml".into()),
            shard: None,
            last_reload_ok: true,
            now: at(1_700_000_090),
            sources: Vec::new(),
        }
    }

    #[test]
    fn account_sources_show_their_state() {
        let status = |up, error: Option<&str>| crate::source::Status {
            up,
            accounts: 40,
            skipped: 1,
            last_success: Some(at(1_700_000_030)),
            error: error.map(str::to_string),
        };
        let info = PageInfo {
            sources: vec![
                ("site-a".into(), status(true, None)),
                ("site-b".into(), status(false, Some("cannot connect <db>"))),
            ],
            ..info()
        };
        let page = landing(&[], &info);
        assert!(
            page.contains(
                "<td>site-a</td><td><span class=\"ok\">read</span></td><td>40</td><td>1</td>"
            ),
            "{page}"
        );
        assert!(
            page.contains(
                "cannot be read</span> (its last accounts stay probed): cannot connect &lt;db&gt;"
            ),
            "{page}"
        );
    }

    #[test]
    fn everything_is_escaped() {
        let mut v = trapped("<b>g</b>", "<script>alert('x')</script>");
        v.success = false;
        v.reason = Some(Reason::Protocol);
        v.detail = Some("-ERR \"bad\" & <worse>".into());
        v.transcript.push("S: <img src=x onerror=alert(1)>".into());
        let pages = [landing(std::slice::from_ref(&v), &info()), account_page(&v)];
        for page in &pages {
            assert!(!page.contains("<script>"), "{page}");
            assert!(!page.contains("<b>g"), "{page}");
            assert!(!page.contains("<img"), "{page}");
        }
        assert!(pages[0].contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(pages[0].contains("-ERR &quot;bad&quot; &amp; &lt;worse&gt;"));
        assert!(pages[1].contains("S: &lt;img src=x onerror=alert(1)&gt;"));
        assert_eq!(escape("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
    }

    #[test]
    fn landing_shows_status_advice_and_links() {
        let mut failing = view("support", "wrong-password");
        failing.probed = true;
        failing.reason = Some(Reason::AuthRejected);
        failing.detail = Some("PASS: -ERR [AUTH] authentication failed".into());
        failing.backoff = true;
        failing.backoff_factor = 4;
        failing.last_probe = Some(at(1_700_000_000));
        let views = vec![
            trapped("sales", "sales inbox/1"),
            failing,
            view("support", "fresh"),
        ];
        let page = landing(&views, &info());
        assert!(page.contains("<a href=\"metrics\">"));
        assert!(page.contains("<a href=\"-/healthy\">"));
        assert!(page.contains("<a href=\"-/ready\">"));
        assert!(page.contains("/etc/mailbox_exporter.yml"));
        assert!(page.contains(
            "APOP advertised but rejected (the server cannot verify it); pin auth_mode: PASS"
        ));
        assert!(page.contains("<a href=\"accounts/sales%20inbox%2F1\">sales inbox/1</a>"));
        assert!(page.contains("<td class=\"ok\">OK</td>"));
        assert!(page.contains("<td class=\"failing\">FAILING</td>"));
        assert!(page.contains("<td class=\"idle\">not probed yet</td>"));
        assert!(page.contains("auth_rejected<br><span class=\"detail\">PASS: -ERR [AUTH]"));
        assert!(page.contains("backoff x4"));
        assert!(page.contains(">fallback</span>"));
        assert!(page.contains("<td>1m 30s ago</td>"));
        assert!(page.contains("<td>never</td>"));
        // Group summary: sales 1/1, support 2 accounts, none authenticated, one failing.
        assert!(page.contains(">sales</a></td><td>1</td><td>1</td><td>0</td><td>0</td>"));
        assert!(page.contains(">support</a></td><td>2</td><td>0</td><td>1</td><td>1</td>"));
        assert_eq!(page.matches("<h2 id=\"group-").count(), 2);
    }

    #[test]
    fn a_failed_reload_is_visible() {
        let info = PageInfo {
            last_reload_ok: false,
            config_file: None,
            ..info()
        };
        let page = landing(&[], &info);
        assert!(page.contains("last reload failed"));
        assert!(page.contains("No accounts are configured."));
    }

    #[test]
    fn link_encoding() {
        assert_eq!(
            encode_path_segment("support-inbox_1.a~"),
            "support-inbox_1.a~"
        );
        assert_eq!(encode_path_segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
        assert_eq!(account_href("x&y"), "accounts/x%26y");
    }

    #[test]
    fn account_page_shows_the_verdict_and_transcript() {
        let mut v = trapped("support", "support-inbox");
        v.cert_expiry = Some(1_800_000_000);
        v.phases.connect = Duration::from_millis(12);
        let page = account_page(&v);
        assert!(page.contains("<h1>support-inbox</h1>"));
        assert!(page.contains("<tr><td>APOP</td><td>rejected</td></tr>"));
        assert!(page.contains("<tr><td>PASS</td><td>success</td></tr>"));
        assert!(page.contains("<td>12 ms</td>"));
        assert!(page.contains("pin auth_mode: PASS"));
        assert!(page.contains(
            "<pre>S: +OK ready &lt;1.2@mail.example.com&gt;\nC: APOP support@example.com ***\n"
        ));
        assert!(page.contains("2023-11-14T22:13:20Z"));
        assert!(page.contains("2027-01-15T08:00:00Z"));
        assert!(page.contains("<a href=\"../\">"));

        let idle = account_page(&view("support", "fresh"));
        assert!(idle.contains("Not probed yet."));
        assert!(!idle.contains("<pre>"));
    }

    #[test]
    fn a_probe_waiting_for_the_failure_budget_says_so() {
        let mut waiting = view("support", "new-inbox");
        waiting.budget_wait = Some("mail.<example>.com".into());
        let pages = [
            landing(std::slice::from_ref(&waiting), &info()),
            account_page(&waiting),
        ];
        for page in &pages {
            assert!(
                page.contains("waiting for the failure budget of mail.&lt;example&gt;.com"),
                "{page}"
            );
        }
        let page = landing(&[view("support", "other")], &info());
        assert!(!page.contains("waiting for the failure budget"));
    }
}
