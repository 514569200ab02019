//! The exposition: what a scrape of `/metrics` reads, encoded from the store at scrape time.
//! Nothing here is kept in sync with the store, and nothing probes.
//!
//! A private `prometheus` registry holds the process collector and [`exporter`]'s collector of
//! the exporter-wide families; the crate's `TextEncoder` writes them, followed by the
//! per-account and per-group families that [`text`] writes by hand ([`families`] is the same
//! through the crate, kept for the exposition benchmark, which measures both).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::core::Collector;
use prometheus::{Registry, TextEncoder};

use super::store::Store;

mod exporter;
mod families;
mod text;

pub use exporter::{REVISION, RUST_VERSION};

/// The Prometheus text exposition of one store.
pub struct Exposition {
    store: Arc<Store>,
    /// The process collector and the exporter-wide families; private, so that tests and
    /// several exporters in one process never share series.
    registry: Registry,
    /// The length of the last exposition, to size the next one.
    last_len: AtomicUsize,
}

impl Exposition {
    pub fn new(store: Arc<Store>) -> Exposition {
        let registry = registry([Box::new(exporter::ExporterCollector::new(Arc::clone(
            &store,
        )))]);
        Exposition {
            store,
            registry,
            last_len: AtomicUsize::new(0),
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        // Gathered before the store is locked here: the collector takes the lock itself.
        let families = self.registry.gather();
        let inner = self.store.read();
        let snapshot = text::Snapshot::take(&inner);
        let accounts = inner.accounts.len();
        drop(inner);
        // ~11 series of ~90 bytes per account until the first exposition tells.
        let estimate = match self.last_len.load(Ordering::Relaxed) {
            0 => 4096 + accounts * 1000,
            last => last + last / 8,
        };
        let mut out = String::with_capacity(estimate);
        // Encoding cannot fail: every family has a name and at least one series.
        let _ = TextEncoder::new().encode_utf8(&families, &mut out);
        text::write_accounts(&mut out, &snapshot);
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// The same exposition with the per-account and per-group families built through the
    /// `prometheus` crate's data model and encoder ([`families::AccountCollector`]): only
    /// for the exposition benchmark, which measures both ways.
    #[doc(hidden)]
    pub fn render_through_crate(&self) -> String {
        let registry = registry([
            Box::new(exporter::ExporterCollector::new(Arc::clone(&self.store))),
            Box::new(families::AccountCollector::new(Arc::clone(&self.store))),
        ]);
        let mut out = String::new();
        let _ = TextEncoder::new().encode_utf8(&registry.gather(), &mut out);
        out
    }
}

/// A new registry with `collectors` and, on Linux, the process collector.
fn registry<const N: usize>(collectors: [Box<dyn Collector>; N]) -> Registry {
    let registry = Registry::new();
    for collector in collectors {
        registry
            .register(collector)
            .expect("a new registry takes the collectors");
    }
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("a new registry takes the process collector");
    registry
}
