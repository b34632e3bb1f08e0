//! The fake server's counters as `metrics` handles, registered when a server is
//! created, with the recorder installed at that moment (none: no-op handles).
//! Names in [`FakeServicesServer`](super::FakeServicesServer)'s docs.

use metrics::{Counter, Gauge};

use super::RpcKind;

/// The prefix of every metric name.
const PREFIX: &str = "fake_coordinator";

fn counter(name: &str, labels: &[(&'static str, &'static str)]) -> Counter {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|&(k, v)| metrics::Label::new(k, v))
        .collect();
    metrics::counter!(format!("{PREFIX}_{name}"), labels)
}

/// The handles behind [`CallCounts`](super::CallCounts).
pub(crate) struct CallMetrics {
    pub(crate) rpcs: [Counter; 7],
    pub(crate) prpc_rpcs: Counter,
    pub(crate) prpc_connections: Counter,
    /// Register, terminate, other.
    pub(crate) batch_entries: [Counter; 3],
    pub(crate) faults: FaultMetrics,
}

/// Injected faults, by kind.
pub(crate) struct FaultMetrics {
    pub(crate) call: Counter,
    pub(crate) batch_entry: Counter,
    pub(crate) dropped_entry: Counter,
    pub(crate) empty_batch: Counter,
}

impl CallMetrics {
    pub(crate) fn register() -> Self {
        let fault = |kind| counter("faults_injected_total", &[("kind", kind)]);
        let entries = |kind| counter("batch_entries_total", &[("kind", kind)]);
        CallMetrics {
            rpcs: RpcKind::ALL.map(|kind| counter("rpcs_total", &[("rpc", kind.method())])),
            prpc_rpcs: counter("prpc_rpcs_total", &[]),
            prpc_connections: counter("prpc_connections_total", &[]),
            batch_entries: [entries("register"), entries("terminate"), entries("other")],
            faults: FaultMetrics {
                call: fault("call"),
                batch_entry: fault("batch_entry"),
                dropped_entry: fault("dropped_entry"),
                empty_batch: fault("empty_batch"),
            },
        }
    }
}

/// The handles of the stored state.
pub(crate) struct StreamMetrics {
    pub(crate) registered: Counter,
    pub(crate) terminated: Counter,
    pub(crate) stored: Gauge,
}

impl Default for StreamMetrics {
    fn default() -> Self {
        StreamMetrics {
            registered: counter("streams_registered_total", &[]),
            terminated: counter("streams_terminated_total", &[]),
            stored: metrics::gauge!(format!("{PREFIX}_streams")),
        }
    }
}
