//! `fake-coordinator`: serves the in-process fake `logdog.Services` server
//! ([`coordinator_testkit::FakeServicesServer`]) over gRPC and pRPC, with
//! prefixes pre-registered from flags, for trying a client by hand.
//!
//! ```text
//! fake-coordinator --addr 127.0.0.1:50051 --prpc-addr 127.0.0.1:8080 \
//!     --prefix chromium:builds/1 --prefix chromium:builds/2:<72 hex digits> \
//!     --prefix chromium:old@0 --token some-token
//! fake-coordinator --print-descriptor 'builds/1/+/stdout'
//! ```
//!
//! It prints the gRPC address (`listening on URL`), the pRPC one (`prpc on
//! URL`), then one line per prefix with its secret in hex (generated when not
//! given). A prefix's `@SECONDS` is its own expiry (`@0`: already expired), so
//! live and expired prefixes can be served side by side. Printing secrets is
//! deliberate: this is a local development tool, and a client needs the secret
//! to register streams. Do not use it with real secrets. Tokens are never
//! printed.
//!
//! It serves until SIGINT (Ctrl-C) or SIGTERM, then shuts down gracefully:
//! health checks turn NOT_SERVING, the listeners stop accepting, calls in
//! flight are answered, and connections close (those still open after 10
//! seconds are cut). With `--dump-on-exit FILE` it then writes the server's
//! state as JSON to `FILE` (prefixes and their expiry, streams with path,
//! protocol version, terminal index, archival flags, registration time, and
//! the call counts; never a secret). It exits 0.
//!
//! The gRPC port also serves `grpc.health.v1.Health` (`logdog.Services` and
//! `""` SERVING) and server reflection (`grpc.reflection.v1` and `v1alpha`),
//! so `grpcurl -plaintext ADDR list` and `grpc_health_probe` work.
//!
//! `--metrics-addr ADDR` (built with the `prometheus` feature) serves the
//! server's counters for Prometheus at `http://ADDR/metrics` (port 0: any
//! free port; the address is printed as `metrics on URL`).
//!
//! `--print-descriptor PATH` prints, as standard base64 (the proto3 JSON form
//! of `bytes`), a serialized `LogStreamDescriptor` for `PATH` that the server
//! accepts, and exits: the `desc` of a JSON `RegisterStream` request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Parser;
use coordinator_api::{PrefixSecret, ProjectName, StreamName, StreamPath};
use coordinator_testkit::{FakeServicesServer, descriptor};

/// How long a graceful shutdown may wait for calls in flight and open
/// connections before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serve a fake LogDog Coordinator (`logdog.Services`) for manual testing.
#[derive(Debug, Parser)]
#[command(name = "fake-coordinator", version)]
struct Args {
    /// Address to serve gRPC on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,

    /// Address to serve pRPC on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    prpc_addr: SocketAddr,

    /// Port to serve pRPC on, on 127.0.0.1 (shorthand for --prpc-addr 127.0.0.1:PORT).
    #[arg(long, value_name = "PORT", conflicts_with = "prpc_addr")]
    prpc_port: Option<u16>,

    /// Require this bearer token on every call (gRPC `authorization` metadata or
    /// pRPC `Authorization` header); calls without an accepted one are answered
    /// PermissionDenied "not a service". Repeatable. Never printed.
    #[arg(long = "token", value_name = "TOKEN")]
    tokens: Vec<String>,

    /// Print a valid serialized LogStreamDescriptor for this stream path
    /// (PREFIX/+/NAME) as standard base64, and exit.
    #[arg(long, value_name = "STREAM_PATH")]
    print_descriptor: Option<StreamPath>,

    /// Prefixes to pre-register.
    #[arg(
        long = "prefix",
        value_name = "PROJECT:PREFIX[:SECRET_HEX][@SECONDS]",
        help = "A prefix to pre-register, as PROJECT:PREFIX[:SECRET_HEX][@SECONDS] (the \
                secret is 36 bytes, 72 hex digits; a random one is generated and printed if \
                omitted; @SECONDS expires this prefix that long after start, overriding \
                --prefix-expiry; @0 registers it already expired). Repeatable."
    )]
    prefixes: Vec<String>,

    /// Expire the pre-registered prefixes this many seconds after start (unless a
    /// --prefix gives its own @SECONDS).
    #[arg(long, value_name = "SECONDS")]
    prefix_expiry: Option<u64>,

    /// On SIGINT/SIGTERM, after the graceful shutdown, write the server's state
    /// as JSON to this file (no secrets).
    #[arg(long, value_name = "FILE")]
    dump_on_exit: Option<PathBuf>,

    /// Serve the server's counters for Prometheus at http://ADDR/metrics (port
    /// 0: any free port; the address is printed). Needs the `prometheus` feature.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// One `--prefix` flag, parsed.
struct PrefixFlag {
    project: ProjectName,
    prefix: StreamName,
    secret: PrefixSecret,
    /// Its own expiry (`@SECONDS`), if given.
    expires_in: Option<Duration>,
}

fn parse_prefix(flag: &str) -> anyhow::Result<PrefixFlag> {
    // `@` is legal in neither a stream name nor hex: the expiry is unambiguous.
    let (flag, expires_in) = match flag.rsplit_once('@') {
        Some((rest, seconds)) => {
            let seconds: u64 = seconds.parse().map_err(|_| {
                anyhow::anyhow!("--prefix ...@{seconds:?}: not a number of seconds")
            })?;
            (rest, Some(Duration::from_secs(seconds)))
        }
        None => (flag, None),
    };
    let mut parts = flag.splitn(3, ':');
    let (Some(project), Some(prefix)) = (parts.next(), parts.next()) else {
        bail!("--prefix {flag:?}: expected PROJECT:PREFIX[:SECRET_HEX]");
    };
    let project: ProjectName = project
        .parse()
        .with_context(|| format!("--prefix {project:?}:...: invalid project"))?;
    let prefix: StreamName = prefix
        .parse()
        .with_context(|| format!("--prefix {project}:{prefix:?}: invalid prefix"))?;
    let secret = match parts.next() {
        Some(hex_secret) => {
            // The error names neither the flag text nor any digit: a typo'd
            // secret is still a secret.
            let bytes = hex::decode(hex_secret).map_err(|_| {
                anyhow::anyhow!("--prefix for {project}:{prefix}: the secret is not valid hex")
            })?;
            PrefixSecret::from_bytes(&bytes)
                .with_context(|| format!("--prefix for {project}:{prefix}: invalid secret"))?
        }
        None => PrefixSecret::generate().context("generating a prefix secret")?,
    };
    Ok(PrefixFlag {
        project,
        prefix,
        secret,
        expires_in,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Logs to stderr, filtered by RUST_LOG (default: warnings; e.g.
    // RUST_LOG=coordinator_testkit=debug). Tokens and secrets are never logged.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(path) = &args.print_descriptor {
        println!(
            "{}",
            base64::engine::general_purpose::STANDARD.encode(descriptor(path))
        );
        return Ok(());
    }
    let prefixes = args
        .prefixes
        .iter()
        .map(|flag| parse_prefix(flag))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let expires_in = args.prefix_expiry.map(Duration::from_secs);

    // Before the server is built: its counters register with the recorder
    // installed at that moment.
    let metrics_url = match args.metrics_addr {
        Some(addr) => Some(serve_metrics(addr)?),
        None => None,
    };

    let prpc_addr = match args.prpc_port {
        Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        None => args.prpc_addr,
    };
    let mut builder = FakeServicesServer::builder()
        .addr(args.addr)
        .prpc_addr(prpc_addr);
    for token in args.tokens {
        builder = builder.token(token);
    }
    for p in &prefixes {
        builder = builder.prefix(
            p.project.clone(),
            p.prefix.clone(),
            p.secret.clone(),
            p.expires_in.or(expires_in),
        );
    }
    let server = builder
        .try_start()
        .await
        .with_context(|| format!("binding {} and {prpc_addr}", args.addr))?;

    println!("listening on {}", server.endpoint());
    println!("prpc on {}", server.prpc_endpoint());
    if let Some(url) = &metrics_url {
        println!("metrics on {url}");
    }
    for p in &prefixes {
        println!(
            "prefix project={} prefix={} secret={}",
            p.project,
            p.prefix,
            hex::encode(p.secret.as_bytes())
        );
    }

    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    let service = server.service().clone();
    // A client that never closes its connection does not keep the server
    // (and the dump) waiting for ever.
    if tokio::time::timeout(SHUTDOWN_GRACE, server.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "connections still open after the grace period; closing them"
        );
    }
    let calls = service.calls();
    if let Some(path) = &args.dump_on_exit {
        write_dump(path, &service)?;
        println!("state written to {}", path.display());
    }
    println!(
        "stopped after {} RPCs ({} over pRPC on {} connections; {} batch entries)",
        calls.total_rpcs(),
        calls.prpc_rpcs,
        calls.prpc_connections,
        calls.batch_entries
    );
    Ok(())
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM; returns the signal's name.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                result.context("listening for SIGINT")?;
                Ok("SIGINT")
            }
            _ = terminate.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("listening for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}

/// Writes the server's state as pretty JSON to `path`: to a temporary file
/// beside it first, renamed into place, so that a reader never sees half a
/// dump.
fn write_dump(path: &Path, service: &FakeServicesServer) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(&service.dump_state()).context("serializing the state")?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Serves the process's metrics for Prometheus on `addr`; returns the URL.
#[cfg(feature = "prometheus")]
fn serve_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    Ok(coordinator_testkit::prometheus::serve_prometheus(addr)?)
}

#[cfg(not(feature = "prometheus"))]
fn serve_metrics(_addr: SocketAddr) -> anyhow::Result<String> {
    bail!(
        "--metrics-addr needs the `prometheus` feature: \
         cargo run -p coordinator-testkit --features prometheus --bin fake-coordinator -- ..."
    )
}
