//! Every account's state and what is read from it, in three parts:
//! - [`store`]: the single source of truth that probes write ([`Store`], through
//!   [`crate::schedule::Ledger`]): every account's state, the groups' counters and the
//!   exporter-wide readings.
//! - [`view`]: one account as the pages read it ([`AccountView`]), copied out of the store.
//! - [`exposition`]: the Prometheus text a scrape reads ([`Exposition`]), encoded from the
//!   store at scrape time. Scraping only encodes; it never probes.

pub mod exposition;
pub mod store;
#[cfg(test)]
mod tests;
pub mod view;

pub use exposition::{Exposition, REVISION, RUST_VERSION};
pub use store::Store;
pub use view::AccountView;
