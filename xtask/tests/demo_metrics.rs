//! `cargo xtask demo --metrics-addr`: the cache's counters (and the embedded
//! server's) on a Prometheus scrape endpoint, with the numbers the report
//! prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET of `url` (`http://HOST:PORT/PATH`); the body.
fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the sample `name` (with its labels, as exposed) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[cfg(unix)]
#[test]
fn demo_serves_the_cache_counters_of_its_report() {
    let mut child = Killed(
        Command::new(XTASK)
            .args([
                "demo",
                "--no-release",
                "--streams",
                "40",
                "--bundles",
                "4",
                "--workers",
                "4",
                "--no-compare",
                "--json",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut url = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("demo: metrics on ") {
            url = Some(u.to_owned());
        }
        if line.starts_with("demo: done; metrics stay on ") {
            break;
        }
    }
    let url = url.expect("the demo printed its metrics URL");
    // The demo is over and still serving: a scrape sees its final counts.
    let text = get(&url);

    let status = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut report = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let run = &report["runs"][0];
    let cache = &run["cache_stats"];
    let count = |v: &serde_json::Value| v.as_u64().unwrap() as f64;

    assert!(count(&cache["hits"]) > 0.0, "{cache}");
    for (metric, reported) in [
        ("coordinator_cache_hits_total", &cache["hits"]),
        ("coordinator_cache_misses_total", &cache["misses"]),
        (
            "coordinator_cache_coalesced_waits_total",
            &cache["coalesced"],
        ),
        (
            "coordinator_cache_inner_calls_total{operation=\"register\"}",
            &cache["inner_register_calls"],
        ),
        (
            "coordinator_cache_inner_calls_total{operation=\"terminate\"}",
            &cache["inner_terminate_calls"],
        ),
        (
            "fake_coordinator_rpcs_total{rpc=\"Batch\"}",
            &run["server"]["batch_rpcs"],
        ),
    ] {
        assert_eq!(sample(&text, metric), count(reported), "{metric}");
    }
    // One entry per stream.
    assert_eq!(sample(&text, "coordinator_cache_entries"), 40.0);
    assert_eq!(
        sample(&text, "fake_coordinator_streams_registered_total"),
        40.0
    );
}
