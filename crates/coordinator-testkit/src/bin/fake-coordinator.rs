//! `fake-coordinator`: serves the in-process fake `logdog.Services` server
//! ([`coordinator_testkit::FakeServicesServer`]) on an address, with prefixes
//! pre-registered from flags, for trying a client by hand.
//!
//! ```text
//! fake-coordinator --addr 127.0.0.1:50051 --prefix chromium:builds/1 \
//!     --prefix chromium:builds/2:<72 hex digits>
//! ```
//!
//! It prints the bound address, then one line per prefix with its secret in hex
//! (generated when not given). Printing secrets is deliberate: this is a local
//! development tool, and a client needs the secret to register streams. Do not
//! use it with real secrets. It serves until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use coordinator_api::{PrefixSecret, ProjectName, StreamName};
use coordinator_testkit::FakeServicesServer;

/// Serve a fake LogDog Coordinator (`logdog.Services`) for manual testing.
#[derive(Debug, Parser)]
#[command(name = "fake-coordinator", version)]
struct Args {
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,

    /// Prefixes to pre-register.
    #[arg(
        long = "prefix",
        value_name = "PROJECT:PREFIX[:SECRET_HEX]",
        help = "A prefix to pre-register, as PROJECT:PREFIX[:SECRET_HEX] (the secret is 36 \
                bytes, 72 hex digits; a random one is generated and printed if omitted). \
                Repeatable."
    )]
    prefixes: Vec<String>,

    /// Expire the pre-registered prefixes this many seconds after start.
    #[arg(long, value_name = "SECONDS")]
    prefix_expiry: Option<u64>,
}

/// One `--prefix` flag, parsed.
struct PrefixFlag {
    project: ProjectName,
    prefix: StreamName,
    secret: PrefixSecret,
}

fn parse_prefix(flag: &str) -> anyhow::Result<PrefixFlag> {
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
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let prefixes = args
        .prefixes
        .iter()
        .map(|flag| parse_prefix(flag))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let expires_in = args.prefix_expiry.map(Duration::from_secs);

    let mut builder = FakeServicesServer::builder().addr(args.addr);
    for p in &prefixes {
        builder = builder.prefix(
            p.project.clone(),
            p.prefix.clone(),
            p.secret.clone(),
            expires_in,
        );
    }
    let server = builder
        .try_start()
        .await
        .with_context(|| format!("binding {}", args.addr))?;

    println!("listening on {}", server.endpoint());
    for p in &prefixes {
        println!(
            "prefix project={} prefix={} secret={}",
            p.project,
            p.prefix,
            hex::encode(p.secret.as_bytes())
        );
    }

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let calls = server.calls();
    server.shutdown().await;
    println!(
        "stopped after {} RPCs ({} batch entries)",
        calls.total_rpcs(),
        calls.batch_entries
    );
    Ok(())
}
