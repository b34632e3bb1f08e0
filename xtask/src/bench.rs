//! `cargo xtask bench`: runs the workspace's criterion benches and summarises
//! them; `--compare` runs only the cache comparison (ours vs moka, quick_cache and
//! the floor, plus the eviction-quality simulation) and prints each candidate as
//! a ratio to ours; `--eviction` runs only the eviction-quality simulation (hit
//! ratios of ours, an exact LRU and quick_cache on a collector-like trace).
//!
//! Sources of figures:
//! - criterion's JSON for every benchmark that ran in this invocation
//!   (`<target>/criterion/**/new/{benchmark,estimates}.json`, newer than the
//!   start of the run): mean and median time per iteration, and throughput when
//!   the benchmark sets one;
//! - the records the cache benches append to `COORDINATOR_BENCH_RECORDS` for what
//!   criterion does not measure (inner calls while coalescing, resident memory).
//!
//! Everything goes to `<target>/bench-report.json`: one row per (workload,
//! candidate, metric) with its value, unit and ratio to ours (candidate ÷
//! `coordinator-cache` on the same workload and metric, when ours ran).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

/// The candidate the comparison divides by.
const OURS: &str = "coordinator-cache";
/// Column order of the comparison table (others follow in order of appearance).
const CANDIDATES: [&str; 6] = [OURS, "moka", "quick_cache", "floor", "lru", "payload"];

/// Flags of `cargo xtask bench`.
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchArgs {
    /// Run only the cache comparison workloads (hit 1/2 threads, misses,
    /// 10,000-way coalescing, memory per entry) on our cache, moka, quick_cache
    /// and the floor, and print each candidate's figures as ratios to ours.
    #[arg(long)]
    compare: bool,
    /// A quick look: 0.3 s warm-up and 1 s measurement per benchmark (criterion
    /// needs at least 10 samples, so slow benchmarks may take longer).
    #[arg(long)]
    quick: bool,
    /// Warm-up time per benchmark, in seconds [default: 1, or 0.3 with --quick].
    #[arg(long, value_name = "SECS")]
    warm_up: Option<f64>,
    /// Measurement time per benchmark, in seconds [default: 3, or 1 with --quick].
    #[arg(long, value_name = "SECS")]
    measurement: Option<f64>,
    /// Skip the memory bench (it fills 1,048,576 entries per implementation).
    #[arg(long)]
    no_memory: bool,
    /// Run only the eviction-quality simulation (no timing): the hit ratio of
    /// our cache, an exact LRU and quick_cache on a collector-like trace at
    /// sizes from 10% to 100% of its working set.
    #[arg(long, conflicts_with = "compare")]
    eviction: bool,
    /// Draw the eviction simulation's trace with this seed (same shape, other
    /// streams and times); 0 is the reports' trace.
    #[arg(long, value_name = "N", default_value_t = 0)]
    trace_seed: u64,
    /// Only benchmarks whose ID matches this criterion filter (a regex over
    /// `<group>/<name>`, e.g. `hit/`, `moka`, `miss|coalesce`); the memory bench
    /// matches it as a substring of `memory/<implementation>`.
    filter: Option<String>,
}

/// One figure of the report.
#[derive(Serialize, Debug, Clone)]
struct Row {
    workload: String,
    candidate: String,
    metric: String,
    value: f64,
    unit: String,
    ratio_to_ours: Option<f64>,
}

/// `bench-report.json`.
#[derive(Serialize)]
struct Report<'a> {
    command: &'a str,
    quick: bool,
    warm_up_secs: f64,
    measurement_secs: f64,
    filter: Option<&'a str>,
    /// What `ratio_to_ours` divides by.
    ours: &'static str,
    results: &'a [Row],
}

/// `new/benchmark.json` (the fields used).
#[derive(Deserialize)]
struct BenchmarkId {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<Throughput>,
}

#[derive(Deserialize)]
enum Throughput {
    Bytes(u64),
    BytesDecimal(u64),
    Elements(u64),
    Bits(u64),
}

/// `new/estimates.json` (the fields used).
#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// A line of the records file.
#[derive(Deserialize)]
struct Record {
    workload: String,
    candidate: String,
    metric: String,
    value: f64,
    unit: String,
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    let (warm_up, measurement) = match args.quick {
        true => (args.warm_up.unwrap_or(0.3), args.measurement.unwrap_or(1.0)),
        false => (args.warm_up.unwrap_or(1.0), args.measurement.unwrap_or(3.0)),
    };
    let root = crate::root();
    let target = target_dir(&root);
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let records = target.join("bench-records.jsonl");
    match std::fs::remove_file(&records) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", records.display()));
        }
        _ => {}
    }
    let started = SystemTime::now();

    let mut criterion_args: Vec<String> = Vec::new();
    criterion_args.extend(args.filter.clone());
    criterion_args.extend([
        "--warm-up-time".to_owned(),
        warm_up.to_string(),
        "--measurement-time".to_owned(),
        measurement.to_string(),
    ]);
    let mut runs: Vec<Vec<String>> = Vec::new();
    let cargo_args = |selection: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["bench"]
            .iter()
            .chain(selection)
            .map(|s| (*s).to_owned())
            .collect();
        v.push("--".to_owned());
        v.extend(criterion_args.iter().cloned());
        v
    };
    let eviction = || -> Vec<String> {
        ["bench", "-p", "coordinator-cache", "--bench", "eviction"]
            .map(str::to_owned)
            .to_vec()
    };
    match (args.compare || args.eviction, args.no_memory) {
        _ if args.eviction => runs.push(eviction()),
        (true, no_memory) => {
            runs.push(cargo_args(&["-p", "coordinator-cache", "--bench", "cache"]));
            if !no_memory {
                runs.push(cargo_args(&[
                    "-p",
                    "coordinator-cache",
                    "--bench",
                    "memory",
                ]));
            }
            runs.push(eviction());
        }
        (false, false) => runs.push(cargo_args(&["--workspace", "--bench", "*"])),
        (false, true) => {
            runs.push(cargo_args(&["-p", "coordinator-cache", "--bench", "cache"]));
            runs.push(cargo_args(&[
                "-p",
                "coordinator-grpc",
                "--bench",
                "round_trip",
            ]));
        }
    }
    for run in &runs {
        eprintln!("$ cargo {}", run.join(" "));
        let status = Command::new(crate::cargo_bin())
            .args(run)
            .env("COORDINATOR_BENCH_RECORDS", &records)
            .env("COORDINATOR_EVICTION_SEED", args.trace_seed.to_string())
            .current_dir(&root)
            .status()
            .with_context(|| format!("running cargo {}", run.join(" ")))?;
        if !status.success() {
            bail!("cargo {} failed ({status})", run.join(" "));
        }
    }

    let mut rows = criterion_rows(&target.join("criterion"), started)?;
    rows.extend(record_rows(&records)?);
    if args.compare || args.eviction {
        // Only the comparison's own groups (a stale grpc result cannot be newer
        // than `started`, but keep the table to what was asked for).
        rows.retain(|r| CANDIDATES.contains(&r.candidate.as_str()));
    }
    if rows.is_empty() {
        bail!(
            "no benchmark results found under {} (did the filter match nothing?)",
            target.join("criterion").display()
        );
    }
    fill_ratios(&mut rows);
    sort_rows(&mut rows);

    println!();
    if args.compare || args.eviction {
        print!("{}", comparison_table(&rows));
    } else {
        print!("{}", summary_table(&rows));
    }

    let report_path = target.join("bench-report.json");
    let report = Report {
        command: if args.compare {
            "cargo xtask bench --compare"
        } else if args.eviction {
            "cargo xtask bench --eviction"
        } else {
            "cargo xtask bench"
        },
        quick: args.quick,
        warm_up_secs: warm_up,
        measurement_secs: measurement,
        filter: args.filter.as_deref(),
        ours: OURS,
        results: &rows,
    };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&report_path, json + "\n")
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("\nReport: {}", report_path.display());
    Ok(())
}

/// The target directory cargo builds into (and criterion writes under):
/// `$CARGO_TARGET_DIR`, else `<workspace>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Rows for every benchmark criterion wrote at or after `since`.
fn criterion_rows(dir: &Path, since: SystemTime) -> Result<Vec<Row>> {
    let mut found = Vec::new();
    find_new_dirs(dir, &mut found)?;
    let mut rows = Vec::new();
    for new in found {
        let benchmark = new.join("benchmark.json");
        let estimates = new.join("estimates.json");
        let modified = std::fs::metadata(&estimates)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_none_or(|m| m < since) {
            continue;
        }
        let id: BenchmarkId = read_json(&benchmark)?;
        let est: Estimates = read_json(&estimates)?;
        let candidate = match (&id.function_id, &id.value_str) {
            (Some(f), Some(v)) => format!("{f}/{v}"),
            (Some(f), None) => f.clone(),
            (None, Some(v)) => v.clone(),
            (None, None) => String::new(),
        };
        let row = |metric: &str, value: f64, unit: &str| Row {
            workload: id.group_id.clone(),
            candidate: candidate.clone(),
            metric: metric.to_owned(),
            value,
            unit: unit.to_owned(),
            ratio_to_ours: None,
        };
        let mean = est.mean.point_estimate;
        rows.push(row("mean", mean, "ns"));
        rows.push(row("median", est.median.point_estimate, "ns"));
        if mean > 0.0 {
            let per_second = |n: u64| n as f64 * 1e9 / mean;
            match id.throughput {
                Some(Throughput::Elements(n)) => {
                    rows.push(row("throughput", per_second(n), "elements/s"));
                }
                Some(Throughput::Bytes(n) | Throughput::BytesDecimal(n)) => {
                    rows.push(row("throughput", per_second(n), "bytes/s"));
                }
                Some(Throughput::Bits(n)) => rows.push(row("throughput", per_second(n), "bits/s")),
                None => {}
            }
        }
    }
    Ok(rows)
}

/// Every `new` directory under `dir` holding a `benchmark.json` (criterion's
/// latest result of one benchmark; `base` and `change` are older or derived).
fn find_new_dirs(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == "new" {
            if path.join("benchmark.json").is_file() {
                found.push(path);
            }
        } else if entry.file_name() != "report" {
            find_new_dirs(&path, found)?;
        }
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Rows from the records file the benches appended to (absent: none).
fn record_rows(path: &Path) -> Result<Vec<Row>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let r: Record = serde_json::from_str(line)
                .with_context(|| format!("parsing a line of {}: {line}", path.display()))?;
            Ok(Row {
                workload: r.workload,
                candidate: r.candidate,
                metric: r.metric,
                value: r.value,
                unit: r.unit,
                ratio_to_ours: None,
            })
        })
        .collect()
}

/// Sets each row's ratio to ours on the same workload and metric.
fn fill_ratios(rows: &mut [Row]) {
    let ours: BTreeMap<(String, String), f64> = rows
        .iter()
        .filter(|r| r.candidate == OURS)
        .map(|r| ((r.workload.clone(), r.metric.clone()), r.value))
        .collect();
    for row in rows {
        if let Some(&base) = ours.get(&(row.workload.clone(), row.metric.clone()))
            && base != 0.0
        {
            row.ratio_to_ours = Some(row.value / base);
        }
    }
}

/// Orders rows as the cache bench runs its workloads (others after, by name),
/// then candidates as [`CANDIDATES`], then metrics as criterion's first.
fn sort_rows(rows: &mut [Row]) {
    const WORKLOADS: [&str; 10] = [
        "hit/1-thread",
        "hit/2-threads",
        "miss",
        "miss/full-cache",
        "mixed/",
        "hit/1-thread-long-keys",
        "hit/1-thread-same-requests",
        "coalesce/",
        "memory/",
        "eviction/",
    ];
    const METRICS: [&str; 3] = ["mean", "median", "throughput"];
    fn rank(list: &[&str], s: &str) -> usize {
        list.iter()
            .position(|p| s == *p || (p.ends_with('/') && s.starts_with(p)))
            .unwrap_or(list.len())
    }
    rows.sort_by(|a, b| {
        // Within a group, shorter names first: `eviction/20%` before `eviction/100%`.
        (rank(&WORKLOADS, &a.workload), a.workload.len(), &a.workload)
            .cmp(&(rank(&WORKLOADS, &b.workload), b.workload.len(), &b.workload))
            .then_with(|| {
                (rank(&CANDIDATES, &a.candidate), &a.candidate)
                    .cmp(&(rank(&CANDIDATES, &b.candidate), &b.candidate))
            })
            .then_with(|| rank(&METRICS, &a.metric).cmp(&rank(&METRICS, &b.metric)))
    });
}

/// Whether a smaller value of `metric` is better.
fn lower_is_better(metric: &str) -> bool {
    !matches!(metric, "throughput" | "entries_held" | "hit_ratio")
}

/// The comparison: one line per (workload, metric), one column per candidate,
/// each cell the value and its ratio to ours.
fn comparison_table(rows: &[Row]) -> String {
    let mut candidates: Vec<&str> = CANDIDATES
        .iter()
        .copied()
        .filter(|c| rows.iter().any(|r| r.candidate == *c))
        .collect();
    for r in rows {
        if !candidates.contains(&r.candidate.as_str()) {
            candidates.push(&r.candidate);
        }
    }
    // (workload, metric) in order of appearance; medians stay in the JSON only.
    let mut lines: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        let key = (r.workload.as_str(), r.metric.as_str());
        if r.metric != "median" && r.metric != "inner_calls_mean" && !lines.contains(&key) {
            lines.push(key);
        }
    }
    let mut table = vec![
        std::iter::once("workload".to_owned())
            .chain(["metric".to_owned(), "better".to_owned()])
            .chain(candidates.iter().map(|c| (*c).to_owned()))
            .collect::<Vec<_>>(),
    ];
    for (workload, metric) in lines {
        let mut line = vec![
            workload.to_owned(),
            metric_label(metric),
            if lower_is_better(metric) {
                "lower"
            } else {
                "higher"
            }
            .to_owned(),
        ];
        for c in &candidates {
            let cell = rows
                .iter()
                .find(|r| r.workload == workload && r.metric == metric && r.candidate == *c)
                .map(|r| match (r.ratio_to_ours, r.candidate == OURS) {
                    (Some(ratio), false) => format!(
                        "{} ({})",
                        format_value(r.value, &r.unit),
                        format_ratio(ratio)
                    ),
                    _ => format_value(r.value, &r.unit),
                })
                .unwrap_or_else(|| "-".to_owned());
            line.push(cell);
        }
        table.push(line);
    }
    let mut out = render(&table);
    let _ = writeln!(
        out,
        "\n(ratio) = candidate ÷ {OURS}. Times are per iteration: one call \
         (one per thread for hit/2-threads; one round of 10,000 callers for coalesce). \
         Throughput counts calls of all threads. Hit ratios: percent of calls answered \
         without an inner call (eviction/<size as % of the working set>)."
    );
    out
}

/// The summary of a full run: one line per benchmark, plus the recorded figures.
fn summary_table(rows: &[Row]) -> String {
    let mut table = vec![
        [
            "workload",
            "candidate",
            "mean",
            "median",
            "throughput",
            "mean ÷ ours",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let find = |r: &Row, metric: &str| {
        rows.iter()
            .find(|o| o.workload == r.workload && o.candidate == r.candidate && o.metric == metric)
    };
    for r in rows.iter().filter(|r| r.metric == "mean") {
        table.push(vec![
            r.workload.clone(),
            r.candidate.clone(),
            format_value(r.value, &r.unit),
            find(r, "median").map_or("-".to_owned(), |m| format_value(m.value, &m.unit)),
            find(r, "throughput").map_or("-".to_owned(), |t| format_value(t.value, &t.unit)),
            r.ratio_to_ours
                .filter(|_| r.candidate != OURS)
                .map_or("-".to_owned(), format_ratio),
        ]);
    }
    let mut out = render(&table);
    let recorded: Vec<&Row> = rows
        .iter()
        .filter(|r| !matches!(r.metric.as_str(), "mean" | "median" | "throughput"))
        .collect();
    if !recorded.is_empty() {
        let mut table = vec![
            ["workload", "candidate", "metric", "value", "÷ ours"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for r in recorded {
            table.push(vec![
                r.workload.clone(),
                r.candidate.clone(),
                metric_label(&r.metric),
                format_value(r.value, &r.unit),
                r.ratio_to_ours
                    .filter(|_| r.candidate != OURS)
                    .map_or("-".to_owned(), format_ratio),
            ]);
        }
        out.push('\n');
        out.push_str(&render(&table));
    }
    out
}

fn metric_label(metric: &str) -> String {
    match metric {
        "mean" => "mean time".to_owned(),
        "inner_calls_max" => "inner calls".to_owned(),
        "resident_bytes_per_entry" => "bytes/entry".to_owned(),
        "hit_ratio" => "hit ratio".to_owned(),
        "entries_held" => "entries held".to_owned(),
        other => other.replace('_', " "),
    }
}

fn format_ratio(ratio: f64) -> String {
    if ratio >= 100.0 {
        format!("{ratio:.0}×")
    } else {
        format!("{ratio:.2}×")
    }
}

/// `value` in `unit`, scaled to a readable prefix.
fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "ns" => match value {
            v if v < 1e3 => format!("{v:.1} ns"),
            v if v < 1e6 => format!("{:.2} µs", v / 1e3),
            v if v < 1e9 => format!("{:.2} ms", v / 1e6),
            v => format!("{:.2} s", v / 1e9),
        },
        "elements/s" | "bytes/s" | "bits/s" => {
            let what = match unit {
                "elements/s" => "/s",
                "bytes/s" => "B/s",
                _ => "bit/s",
            };
            match value {
                v if v >= 1e9 => format!("{:.2} G{what}", v / 1e9),
                v if v >= 1e6 => format!("{:.2} M{what}", v / 1e6),
                v if v >= 1e3 => format!("{:.2} K{what}", v / 1e3),
                v => format!("{v:.1} {what}"),
            }
        }
        "B" => format!("{value:.0} B"),
        "%" => format!("{value:.2}%"),
        "calls" | "entries" if value.fract() == 0.0 => format!("{value:.0}"),
        "calls" | "entries" => format!("{value:.1}"),
        other => format!("{value:.1} {other}"),
    }
}

/// Left-aligned columns, two spaces apart, with a rule under the header.
fn render(table: &[Vec<String>]) -> String {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            table
                .iter()
                .filter_map(|row| row.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, row) in table.iter().enumerate() {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell}{}  ", " ".repeat(width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if n == 0 {
            let rule: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
            out.push_str(&"─".repeat(rule));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, candidate: &str, metric: &str, value: f64) -> Row {
        Row {
            workload: workload.to_owned(),
            candidate: candidate.to_owned(),
            metric: metric.to_owned(),
            value,
            unit: "ns".to_owned(),
            ratio_to_ours: None,
        }
    }

    #[test]
    fn ratios_divide_by_ours_on_the_same_workload_and_metric() {
        let mut rows = vec![
            row("hit", "moka", "mean", 600.0),
            row("hit", OURS, "mean", 50.0),
            row("hit", OURS, "median", 40.0),
            row("hit", "moka", "median", 400.0),
            row("miss", "moka", "mean", 10.0),
        ];
        fill_ratios(&mut rows);
        let ratios: Vec<Option<f64>> = rows.iter().map(|r| r.ratio_to_ours).collect();
        assert_eq!(ratios, [Some(12.0), Some(1.0), Some(1.0), Some(10.0), None]);
    }

    #[test]
    fn criterion_results_are_read_if_newer_than_the_run() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        let new = dir.join("hit_1-thread").join("moka").join("new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"hit/1-thread","function_id":"moka","value_str":null,
                "throughput":{"Elements":2},"full_id":"hit/1-thread/moka",
                "directory_name":"hit_1-thread/moka","title":"hit/1-thread/moka"}"#,
        )
        .unwrap();
        let estimate = r#"{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":PE,"standard_error":0.1}"#;
        std::fs::write(
            new.join("estimates.json"),
            format!(
                r#"{{"mean":{},"median":{},"median_abs_dev":{},"slope":null,"std_dev":{}}}"#,
                estimate.replace("PE", "500.0"),
                estimate.replace("PE", "400.0"),
                estimate.replace("PE", "1.0"),
                estimate.replace("PE", "1.0"),
            ),
        )
        .unwrap();
        let long_ago = SystemTime::UNIX_EPOCH;
        let rows = criterion_rows(&dir, long_ago).unwrap();
        let found: Vec<(&str, &str, &str, f64)> = rows
            .iter()
            .map(|r| {
                (
                    r.workload.as_str(),
                    r.candidate.as_str(),
                    r.metric.as_str(),
                    r.value,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("hit/1-thread", "moka", "mean", 500.0),
                ("hit/1-thread", "moka", "median", 400.0),
                // Two elements per 500 ns iteration.
                ("hit/1-thread", "moka", "throughput", 4e6),
            ]
        );
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(criterion_rows(&dir, future).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn values_are_scaled_for_reading() {
        assert_eq!(format_value(52.14, "ns"), "52.1 ns");
        assert_eq!(format_value(12_345.0, "ns"), "12.35 µs");
        assert_eq!(format_value(2.5e7, "elements/s"), "25.00 M/s");
        assert_eq!(format_value(1.0, "calls"), "1");
        assert_eq!(format_ratio(11.749), "11.75×");
    }
}
