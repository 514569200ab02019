//! The landing page and the per-account pages (HTML).
//!
//! Stand-ins with the agreed signatures, so that the service compiles; the page module
//! replaces them.

use crate::metrics::AccountView;

/// Facts about the running exporter shown on the landing page.
#[derive(Debug, Clone, Default)]
pub struct PageInfo {
    pub version: String,
    pub config_file: String,
    pub shard: Option<String>,
}

pub fn landing(accounts: &[AccountView], info: &PageInfo) -> String {
    let _ = (accounts, info);
    todo!()
}

pub fn account_page(account: &AccountView) -> String {
    let _ = account;
    todo!()
}
