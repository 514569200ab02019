//! The exposition: what a scrape of `/metrics` reads, encoded from the store at scrape time.
//! Nothing here is kept in sync with the store, and nothing probes.
//!
//! A private `prometheus` registry holds the process collector and [`exporter`]'s collector of
//! the exporter-wide families; the crate's `TextEncoder` writes them, followed by the
//! per-account and per-group families that [`text`] writes by hand ([`families`] is the same
//! through the crate, kept for the exposition benchmark, which measures both).

use std::io;
use std::sync::Arc;

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
}

impl Exposition {
    pub fn new(store: Arc<Store>) -> Exposition {
        let registry = registry([Box::new(exporter::ExporterCollector::new(Arc::clone(
            &store,
        )))]);
        Exposition { store, registry }
    }

    /// Writes the Prometheus text exposition (format 0.0.4) to `out`, a buffer's worth at a
    /// time; fails only when `out` does.
    pub fn write(&self, out: &mut dyn io::Write) -> io::Result<()> {
        // Gathered before the store is locked here: the collector takes the lock itself.
        let families = self.registry.gather();
        let inner = self.store.read();
        let snapshot = text::Snapshot::take(&inner);
        drop(inner);
        // Encoding cannot fail: every family has a name and at least one series.
        let mut head = String::new();
        let _ = TextEncoder::new().encode_utf8(&families, &mut head);
        out.write_all(head.as_bytes())?;
        let mut out = text::Out::new(out);
        text::write_accounts(&mut out, &snapshot);
        out.finish()
    }

    /// The whole exposition as one string, for tests and the exposition benchmark.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Writing to a `Vec` cannot fail, and the text is UTF-8 by construction.
        let _ = self.write(&mut out);
        String::from_utf8(out).unwrap_or_default()
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
