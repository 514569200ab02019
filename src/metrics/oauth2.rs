//! The token sources' series: requests by result and the cached token's expiry.

use std::fmt;
use std::time::UNIX_EPOCH;

use super::{escape_label_into, header, series};
use crate::oauth2::{RESULTS, SourceStats};

pub(super) fn write_tokens(out: &mut String, sources: &[SourceStats]) -> fmt::Result {
    if sources.is_empty() {
        return Ok(());
    }
    let labels = |source: &SourceStats| {
        let mut labels = String::from("source=\"");
        escape_label_into(&mut labels, &source.name);
        labels.push('"');
        labels
    };
    header(
        out,
        "mailbox_exporter_oauth2_token_requests_total",
        "counter",
        "OAuth2 token requests (reads of a token file) by source and result: success, error \
         (the provider refused, or the file is unusable), unreachable, malformed.",
    )?;
    for source in sources {
        let labels = labels(source);
        for result in RESULTS {
            let count = source.requests.get(result).copied().unwrap_or(0);
            series(
                out,
                "mailbox_exporter_oauth2_token_requests_total",
                &labels,
                &[("result", result)],
                count,
            );
        }
    }
    header(
        out,
        "mailbox_exporter_oauth2_token_expiry_timestamp_seconds",
        "gauge",
        "When the source's cached OAuth2 token expires (Unix time); absent while none is \
         cached or its lifetime is unknown.",
    )?;
    for source in sources {
        if let Some(expiry) = source.expiry {
            let seconds = expiry
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            series(
                out,
                "mailbox_exporter_oauth2_token_expiry_timestamp_seconds",
                &labels(source),
                &[],
                seconds,
            );
        }
    }
    Ok(())
}
