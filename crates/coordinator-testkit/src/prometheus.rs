//! A Prometheus scrape endpoint for whatever this process records through the
//! `metrics` facade (feature `prometheus`): the fake server's counters, a
//! cache's, anything else. Used by `fake-coordinator --metrics-addr` and the
//! demo's `--metrics-addr`.

use std::net::SocketAddr;

/// Why the endpoint could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsEndpointError {
    /// No free port could be found for port 0.
    #[error("finding a free port on {addr}: {source}")]
    FreePort {
        /// The address asked for.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The exporter could not be installed (a recorder is already installed,
    /// or the listener could not be started).
    #[error("serving metrics on {addr}: {source}")]
    Install {
        /// The address served on.
        addr: SocketAddr,
        /// The exporter's error.
        #[source]
        source: metrics_exporter_prometheus::BuildError,
    },
}

/// Installs the Prometheus exporter as this process's global `metrics`
/// recorder, serving `/metrics` on `addr`, and returns the scrape URL.
///
/// Install it before building what records (a cache, a server): they register
/// their counters with the recorder installed at that moment. Port 0 is
/// resolved to a free port first, since the exporter does not report the port
/// it bound; another process could take that port in between.
pub fn serve_prometheus(addr: SocketAddr) -> Result<String, MetricsEndpointError> {
    let addr = if addr.port() == 0 {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.local_addr())
            .map_err(|source| MetricsEndpointError::FreePort { addr, source })?
    } else {
        addr
    };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|source| MetricsEndpointError::Install { addr, source })?;
    Ok(format!("http://{addr}/metrics"))
}
