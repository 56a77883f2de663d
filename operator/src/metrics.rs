//! The operator's Prometheus metrics, as plain atomics rendered in the text format.
//!
//! A handful of counters and gauges do not need a metrics library: each reconcile bumps
//! them, and `GET /metrics` renders them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Counters and gauges of one operator process.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    reconcile_micros: AtomicU64,
    leader: AtomicBool,
    ready: AtomicBool,
}

impl Metrics {
    /// Counts one reconcile of `kind` that took `took`.
    pub fn reconciled(&self, kind: &'static str, took: Duration) {
        *self.reconciles.lock().entry(kind).or_default() += 1;
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.reconcile_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts one failed reconcile of `kind`.
    pub fn failed(&self, kind: &'static str, error: &'static str) {
        *self.errors.lock().entry((kind, error)).or_default() += 1;
    }

    /// Records whether this process holds the leader lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Whether this process holds the leader lease.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Records whether the process can serve (it reached the API server).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the process can serve.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP strata_operator_reconciles_total Reconciles run, by resource kind.\n");
        out.push_str("# TYPE strata_operator_reconciles_total counter\n");
        for (kind, n) in self.reconciles.lock().iter() {
            let _ = writeln!(
                out,
                "strata_operator_reconciles_total{{kind=\"{kind}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP strata_operator_reconcile_errors_total Failed reconciles, by kind and error.\n",
        );
        out.push_str("# TYPE strata_operator_reconcile_errors_total counter\n");
        for ((kind, error), n) in self.errors.lock().iter() {
            let _ = writeln!(
                out,
                "strata_operator_reconcile_errors_total{{kind=\"{kind}\",error=\"{error}\"}} {n}"
            );
        }
        let seconds = self.reconcile_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.push_str("# HELP strata_operator_reconcile_seconds_total Time spent reconciling.\n");
        out.push_str("# TYPE strata_operator_reconcile_seconds_total counter\n");
        let _ = writeln!(out, "strata_operator_reconcile_seconds_total {seconds}");
        out.push_str(
            "# HELP strata_operator_leader Whether this process holds the leader lease.\n",
        );
        out.push_str("# TYPE strata_operator_leader gauge\n");
        let _ = writeln!(out, "strata_operator_leader {}", u8::from(self.is_leader()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_label() {
        let m = Metrics::default();
        m.reconciled("StrataCluster", Duration::from_millis(1500));
        m.reconciled("StrataCluster", Duration::from_millis(500));
        m.failed("StrataCluster", "kube");
        m.set_leader(true);
        let text = m.render();
        assert!(
            text.contains("strata_operator_reconciles_total{kind=\"StrataCluster\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "strata_operator_reconcile_errors_total{kind=\"StrataCluster\",error=\"kube\"} 1\n"
        ));
        assert!(
            text.contains("strata_operator_reconcile_seconds_total 2\n"),
            "{text}"
        );
        assert!(text.contains("strata_operator_leader 1\n"));
    }
}
