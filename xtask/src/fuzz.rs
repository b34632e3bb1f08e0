//! `cargo xtask fuzz`: runs the cargo-fuzz targets under `fuzz/` for a fixed
//! time each and reports executions and findings per target.
//!
//! - Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) if it is missing.
//! - Sets `RUSTC_BOOTSTRAP=1` for every cargo-fuzz command. The machine has
//!   only the stable toolchain, and cargo-fuzz's sanitizer builds pass nightly
//!   flags (`-Zsanitizer=address`); the bootstrap variable lets stable rustc
//!   accept them. With `--sanitizer none` (the default) the flags cargo-fuzz
//!   passes are all stable (`-Cpasses=sancov-module`, `-Cllvm-args=...`), but
//!   the variable is still set always: cargo rebuilds everything when it
//!   changes, so one setting keeps the fuzz build cached.
//! - The default sanitizer is `none`: the workspace forbids `unsafe`, so
//!   AddressSanitizer would only watch dependencies, at two to three times the
//!   cost per execution. `--sanitizer address` turns it on.
//! - Corpora (`fuzz/corpus/TARGET`) and crash artifacts (`fuzz/artifacts/TARGET`)
//!   are kept out of git; the committed seeds in `fuzz/seeds/TARGET` are read
//!   as a second corpus. Each run's libFuzzer log is written to
//!   `fuzz/target/xtask-logs/TARGET.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Options of `cargo xtask fuzz`.
#[derive(Args, Debug)]
pub(crate) struct FuzzArgs {
    /// How long to run each target, in seconds (libFuzzer's -max_total_time).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run only this target (repeatable); all targets by default.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// cargo-fuzz's sanitizer: none, address, leak, memory or thread.
    #[arg(long, default_value = "none")]
    sanitizer: String,
    /// Kill an input that runs longer than this many seconds and report it
    /// as a finding (libFuzzer's -timeout).
    #[arg(long, default_value_t = 20)]
    input_timeout: u64,
}

/// What one target's run produced.
struct TargetReport {
    name: String,
    seconds: f64,
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    new_units: Option<u64>,
    corpus_files: usize,
    /// Paths of the inputs libFuzzer saved for crashes, timeouts, leaks, OOMs.
    findings: Vec<String>,
    /// The panic message (or libFuzzer's summary) of the first finding.
    first_failure: Option<String>,
    log: PathBuf,
}

pub(crate) fn run(args: FuzzArgs) -> Result<()> {
    let fuzz_dir = crate::root().join("fuzz");
    ensure_cargo_fuzz()?;
    let available = list_targets(&fuzz_dir)?;
    let targets = if args.targets.is_empty() {
        available.clone()
    } else {
        for t in &args.targets {
            if !available.contains(t) {
                bail!("no fuzz target {t:?}; the targets are {available:?}");
            }
        }
        args.targets.clone()
    };

    println!("building the fuzz targets (sanitizer: {})", args.sanitizer);
    let status = cargo_fuzz(&fuzz_dir)
        .args(["build", "--sanitizer", &args.sanitizer])
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }

    let logs = fuzz_dir.join("target").join("xtask-logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut reports = Vec::new();
    for target in &targets {
        println!("fuzzing {target} for {} s", args.seconds);
        let report = run_target(&fuzz_dir, &logs, target, &args)?;
        print_report(&report);
        reports.push(report);
    }

    println!();
    println!(
        "{:<18} {:>8} {:>14} {:>10} {:>8} {:>8}  findings",
        "target", "seconds", "executions", "exec/s", "new", "corpus"
    );
    for r in &reports {
        println!(
            "{:<18} {:>8.0} {:>14} {:>10} {:>8} {:>8}  {}",
            r.name,
            r.seconds,
            show(r.executions),
            show(r.exec_per_sec),
            show(r.new_units),
            r.corpus_files,
            r.findings.len()
        );
    }
    let found: usize = reports.iter().map(|r| r.findings.len()).sum();
    if found > 0 {
        bail!(
            "{found} finding(s); replay one with `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s {} TARGET ARTIFACT`",
            args.sanitizer
        );
    }
    Ok(())
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn print_report(r: &TargetReport) {
    println!(
        "  {}: {} executions in {:.0} s ({} exec/s), {} new inputs, {} corpus files; log: {}",
        r.name,
        show(r.executions),
        r.seconds,
        show(r.exec_per_sec),
        show(r.new_units),
        r.corpus_files,
        r.log.display()
    );
    if r.findings.is_empty() {
        println!("  {}: no findings", r.name);
    }
    for f in &r.findings {
        println!("  {}: FINDING {f}", r.name);
    }
    if let Some(failure) = &r.first_failure {
        println!("  {}: {failure}", r.name);
    }
}

/// A `cargo fuzz` command run in `fuzz_dir`, with the bootstrap variable set.
fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut command = Command::new(crate::cargo_bin());
    command
        .arg("fuzz")
        .current_dir(fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1");
    command
}

/// Installs cargo-fuzz with `cargo install --locked` unless `cargo fuzz` runs.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new(crate::cargo_bin())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("cargo-fuzz is missing: installing it with `cargo install cargo-fuzz --locked`");
    crate::cargo(&["install", "cargo-fuzz", "--locked"])
}

fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let output = cargo_fuzz(fuzz_dir)
        .arg("list")
        .output()
        .context("running cargo fuzz list")?;
    if !output.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// libFuzzer options a target needs beyond the defaults.
fn extra_options(target: &str) -> &'static [&'static str] {
    match target {
        // Names up to 4096 bytes are valid: inputs must reach past that.
        "names" => &["-max_len=8192"],
        _ => &[],
    }
}

fn run_target(fuzz_dir: &Path, logs: &Path, target: &str, args: &FuzzArgs) -> Result<TargetReport> {
    let corpus = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let log = logs.join(format!("{target}.log"));
    let log_file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;

    let mut command = cargo_fuzz(fuzz_dir);
    command
        .args(["run", "--sanitizer", &args.sanitizer, target])
        .arg(&corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    command
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-timeout={}", args.input_timeout))
        .arg("-print_final_stats=1")
        .args(extra_options(target))
        .stdout(log_file.try_clone().context("cloning the log handle")?)
        .stderr(log_file);
    let start = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;

    let mut report = parse_log(target, &text);
    report.seconds = seconds;
    report.log = log;
    report.corpus_files = fs::read_dir(&corpus).map_or(0, |d| d.count());
    if !status.success() && report.findings.is_empty() {
        bail!(
            "cargo fuzz run {target} failed ({status}) without a finding; see {}",
            report.log.display()
        );
    }
    Ok(report)
}

/// Reads executions, speed and findings from a libFuzzer log.
fn parse_log(target: &str, text: &str) -> TargetReport {
    let stat = |name: &str| -> Option<u64> {
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
    };
    // After a crash there are no final stats: use the last status line's count
    // ("#123456\tNEW cov: ...") or the "Done N runs" line.
    let last_status = text
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix('#'))
        .find_map(|l| l.split_whitespace().next()?.parse::<u64>().ok());
    let done = text.lines().rev().find_map(|l| {
        l.strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
    let findings = text
        .lines()
        .filter_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
        .map(str::to_owned)
        .collect();
    let first_failure = text
        .lines()
        .find(|l| l.contains("panicked at") || l.starts_with("SUMMARY: libFuzzer"))
        .map(|l| {
            // The panic's message is on the line after "panicked at".
            let mut lines = text.lines().skip_while(|x| *x != l);
            let head = lines.next().unwrap_or_default();
            match lines.next() {
                Some(msg) if head.contains("panicked at") => format!("{head} {msg}"),
                _ => head.to_owned(),
            }
        });
    TargetReport {
        name: target.to_owned(),
        seconds: 0.0,
        executions: stat("number_of_executed_units").or(done).or(last_status),
        exec_per_sec: stat("average_exec_per_sec"),
        new_units: stat("new_units_added"),
        corpus_files: 0,
        findings,
        first_failure,
        log: PathBuf::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_clean_run() {
        let log = "#1000\tNEW cov: 5\n#2000\tDONE cov: 5\nDone 2000 runs in 3 second(s)\n\
                   stat::number_of_executed_units: 2001\nstat::average_exec_per_sec:     667\n\
                   stat::new_units_added:          12\n";
        let r = parse_log("names", log);
        assert_eq!(r.executions, Some(2001));
        assert_eq!(r.exec_per_sec, Some(667));
        assert_eq!(r.new_units, Some(12));
        assert!(r.findings.is_empty());
        assert_eq!(r.first_failure, None);
    }

    #[test]
    fn reads_a_crash() {
        let log = "#512\tNEW cov: 5\n#4096\tpulse cov: 7\n\
                   thread '<unnamed>' panicked at fuzz_targets/names.rs:215:17:\n\
                   assertion failed: split\n==1== ERROR: libFuzzer: deadly signal\n\
                   SUMMARY: libFuzzer: deadly signal\n\
                   artifact_prefix='/f/artifacts/names/'; Test unit written to /f/artifacts/names/crash-ab\n";
        let r = parse_log("names", log);
        assert_eq!(r.executions, Some(4096));
        assert_eq!(r.findings, ["/f/artifacts/names/crash-ab"]);
        assert_eq!(
            r.first_failure.as_deref(),
            Some(
                "thread '<unnamed>' panicked at fuzz_targets/names.rs:215:17: assertion failed: split"
            )
        );
    }
}
