//! `cargo xtask`: the project's commands (matklad's xtask convention).
//!
//! - `cargo xtask demo`: the main job, an end-to-end collector run. It measures
//!   throughput, so from a debug build of xtask it re-runs itself from a release
//!   build (`--no-release` skips that); the other commands run as built.
//! - `cargo xtask bench`: the criterion benches and a summary.
//! - `cargo xtask ci`: exactly what `.ci/run` does, with the same lean build
//!   settings.
//! - `cargo xtask fuzz --seconds N [--target NAME]`: the cargo-fuzz targets.
//! - `cargo xtask codegen [--check]`: regenerate (or check) the protobuf code
//!   checked in under `coordinator-services` and `coordinator-grpc`.

mod bench;
mod demo;
mod fuzz;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Project commands for the coordinator workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the end-to-end demo: a simulated collector through cache → gRPC
    /// (batched) → the embedded fake Coordinator, verified against its state.
    /// Runs from a release build (built on first use) unless `--no-release`.
    Demo(demo::DemoArgs),
    /// Run the workspace's criterion benches and print a summary; `--compare`
    /// runs the cache against moka, quick_cache and a sharded-map floor.
    Bench(bench::BenchArgs),
    /// Run the CI steps: fmt check, codegen check, clippy -D warnings (all
    /// and default features, and the fuzz targets), tests, docs (all and
    /// default features).
    Ci,
    /// Run the bounded-memory soak test (release build, ignored by default).
    Soak,
    /// Run each cargo-fuzz target under `fuzz/` for `--seconds N` and report
    /// executions and findings (installs cargo-fuzz if it is missing).
    Fuzz(fuzz::FuzzArgs),
    /// Regenerate the protobuf code checked in under `crates/` from `proto/`
    /// (protox, prost, tonic); `--check` fails if it is stale instead.
    Codegen {
        /// Write nothing; fail if a checked-in file differs.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Demo(args) => demo::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Ci => ci(),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::Codegen { check } => codegen(check),
        Cmd::Soak => cargo(&[
            "test",
            "--release",
            "-p",
            "coordinator",
            "--all-features",
            "--test",
            "soak",
            "--",
            "--ignored",
            "--nocapture",
        ]),
    }
}

/// Runs the code generator (its own package, so that protox is built only
/// when generating, never for the libraries or the other commands).
fn codegen(check: bool) -> Result<()> {
    codegen_with(check, &[])
}

fn codegen_with(check: bool, env: &[(&str, &str)]) -> Result<()> {
    let root = root();
    let root = root.to_str().context("the workspace path is not UTF-8")?;
    let mut args = vec!["run", "--quiet", "--package", "coordinator-codegen", "--"];
    if check {
        args.push("--check");
    }
    args.push(root);
    cargo_with(&args, env)
}

/// The settings CI builds with: no incremental caches (CI compiles
/// everything once) and line tables only for debug info, which keeps file and
/// line in panics and backtraces. Full debug info grew a fresh CI build past
/// 11 GB of disk; these keep it about 3.3 GB.
const CI_ENV: [(&str, &str); 2] = [
    ("CARGO_INCREMENTAL", "0"),
    ("CARGO_PROFILE_DEV_DEBUG", "line-tables-only"),
];

/// The CI steps, in order. `.ci/run` runs exactly this.
fn ci() -> Result<()> {
    let cargo = |args: &[&str]| cargo_with(args, &CI_ENV);
    cargo(&["fmt", "--all", "--", "--check"])?;
    codegen_with(true, &CI_ENV)?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    // Default features too: an item behind a feature must not break the
    // default build's lints or intra-doc links.
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The fuzz targets are their own workspace (no libFuzzer in the main
    // build); linting them here catches a library change that breaks them.
    cargo(&[
        "clippy",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace", "--all-features"])?;
    for features in [&["--all-features"][..], &[]] {
        let status = Command::new(cargo_bin())
            .args(["doc", "--workspace", "--no-deps"])
            .args(features)
            .envs(CI_ENV)
            .env("RUSTDOCFLAGS", "-D warnings")
            .current_dir(root())
            .status()
            .context("running cargo doc")?;
        if !status.success() {
            bail!("cargo doc {} failed", features.join(" "));
        }
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_with(args, &[])
}

fn cargo_with(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let status = Command::new(cargo_bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
