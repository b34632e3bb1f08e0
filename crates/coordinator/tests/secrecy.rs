//! Secrecy: no prefix secret leaks, in any encoding, into anything the stack
//! writes or formats while it runs a chaos workload.
//!
//! Captured: every tracing event and span of every crate at TRACE level (and
//! `log` records), plus the `Debug` (plain and pretty) and `Display` of every
//! request, state and error the workload produced, and of every component and
//! its counters. Searched for: each secret's raw bytes (the secrets are
//! printable, so a raw leak is visible text), lowercase and uppercase hex,
//! standard and URL-safe base64 with and without padding, and the decimal and
//! hex byte lists `Debug` prints for a `Vec<u8>`: any run of about ten bytes or
//! more of a secret in any of these forms is a leak.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Feeder, Stack, StackOptions, StreamKind, Transcript, Workload, WorkloadSpec};
use coordinator::{
    Code, Coordinator, MessageIndex, PrefixSecret, RegisterRequest, TerminateRequest,
};
use coordinator_grpc::{GrpcCoordinator, RetryPolicy};
use coordinator_testkit::{BatchOrder, FakeServicesServer};

const DEFAULT_SEED: u64 = 0x005e_c2e7;

/// A bearer token the stack sends: it must not leak either.
const TOKEN: &str = "ya29.BearerTokenNotForLogs0123456789";

const SPEC: WorkloadSpec = WorkloadSpec {
    streams: 80,
    impostors: 8,
    prefixes: 6,
    max_bundles: 4,
    single_bundle: 0.2,
    open: 0.2,
    duplicate: 0.1,
};

/// A shared buffer the tracing subscriber writes to.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures every tracing event and span (and `log` record) of the process.
fn capture_all_tracing() -> Captured {
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::util::SubscriberInitExt;
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish()
        .try_init()
        .expect("no other subscriber is installed in this test binary");
    captured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_into_logs_errors_or_debug_output() {
    let captured = capture_all_tracing();
    let seed = common::seed(DEFAULT_SEED);
    println!(
        "secrecy seed {seed:#x} (rerun with {}={seed:#x})",
        common::SEED_VAR
    );
    let workload = Arc::new(Workload::generate(&SPEC, seed));
    let secrets = workload.secrets();
    assert!(
        secrets
            .iter()
            .all(|s| s.as_bytes().iter().all(u8::is_ascii_alphanumeric)),
        "the secrets must be printable for the raw check to mean anything"
    );
    let transcript = Arc::new(Transcript::default());
    let started = std::time::Instant::now();

    let mut server = FakeServicesServer::start().await;
    workload.register_prefixes(&server);
    let stack = Stack::build(server.channel(), StackOptions::default());
    let coordinator: Arc<dyn Coordinator> = stack.cache.clone();
    let feeder = Feeder::new(&workload, 4);
    let collector = tokio::spawn(common::run_collector(
        coordinator,
        workload.clone(),
        8,
        Some(transcript.clone()),
        feeder.clone(),
    ));

    // Chaos: transient failures of every kind, per-entry errors, dropped and
    // empty answers, timeouts, a restart.
    let faults = server.faults();
    faults.set_batch_order(BatchOrder::Shuffled { seed });
    faults.fail_fraction(0.15, Code::Unavailable, seed);
    faults.fail_next(3, Code::Internal);
    faults.fail_next_batch_entries_flagged(6, Code::Aborted, true);
    faults.drop_batch_entries_where(|i| i == 2);
    faults.empty_next_batches(2);
    feeder.release_next();
    feeder.wait_idle().await;
    faults.set_latency(Duration::from_millis(1500));
    feeder.release_next();
    tokio::select! {
        () = stack.observer.wait(|c| c.timed_out >= 1) => {}
        () = feeder.wait_idle() => {}
    }
    faults.set_latency(Duration::ZERO);
    feeder.wait_idle().await;
    server.restart(true).await;
    feeder.release_all();
    let report = collector.await.expect("the collector panicked");
    assert_eq!(report.panics, 0);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(
        report.refused_impostors >= workload.count(StreamKind::Impostor) as u64,
        "every impostor was refused: {report:?}"
    );
    assert!(common::verify(&server, &workload).is_empty());

    // Error paths that carry secrets as input: bad lengths, wrong secrets,
    // direct RPCs with retries.
    let plan = workload
        .streams
        .iter()
        .find(|s| s.kind == StreamKind::Terminal)
        .unwrap();
    let impostor = workload
        .streams
        .iter()
        .find(|s| s.kind == StreamKind::Impostor)
        .unwrap();
    let secret = plan.secret.as_bytes();
    let mut longer = secret.to_vec();
    longer.push(b'x');
    for bytes in [&secret[..35], &longer[..], &secret[1..]] {
        let e = RegisterRequest::parse(plan.project.as_str(), plan.path.as_str(), bytes, None)
            .unwrap_err();
        transcript.record_error(&e);
        let e = PrefixSecret::from_bytes(bytes).unwrap_err();
        transcript.record(format!("{e} {e:?} {e:#?}"));
    }
    let stored = server.stream(&plan.project, &plan.path).unwrap();
    transcript.record(format!("{stored:?} {stored:#?}"));
    let wrong_secret = TerminateRequest {
        secret: impostor.secret.clone(),
        ..TerminateRequest::for_state(&stored.state(), MessageIndex::from(1))
    };
    let direct = GrpcCoordinator::builder()
        .retry(common::fast_retry(3))
        .build(server.channel())
        .unwrap();
    server.faults().clear();
    server.faults().fail_next(2, Code::Unavailable);
    for coordinator in [&direct as &dyn Coordinator, stack.grpc()] {
        let e = coordinator
            .terminate_stream(&wrong_secret)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        transcript.record_error(&e);
        let request = RegisterRequest::new(
            impostor.project.clone(),
            impostor.path.clone(),
            impostor.secret.clone(),
        );
        let e = coordinator
            .register_stream(&request, &impostor.desc)
            .await
            .unwrap_err();
        transcript.record_error(&e);
    }
    // A bearer token is a credential too: sent (as a sensitive header) and
    // formatted, it must not show either.
    let with_token = GrpcCoordinator::builder()
        .retry(RetryPolicy::none())
        .bearer_token(TOKEN)
        .build(server.channel())
        .unwrap();
    let request = RegisterRequest::new(
        impostor.project.clone(),
        impostor.path.clone(),
        impostor.secret.clone(),
    );
    let e = with_token
        .register_stream(&request, &impostor.desc)
        .await
        .unwrap_err();
    transcript.record_error(&e);
    transcript.record(format!("{with_token:?} {direct:?}"));

    // Every component's Debug and counters.
    transcript.record(format!("{:?} {:#?}", stack.cache, stack.cache.stats()));
    transcript.record(format!("{:?} {:#?}", stack.grpc(), stack.batch_stats()));
    transcript.record(format!("{:?}", stack.grpc().batching_client()));
    transcript.record(format!("{server:?} {:?}", server.faults()));
    transcript.record(format!("{:?}", server.streams()));
    transcript.record(format!("{:#?}", server.calls()));
    server.shutdown().await;

    println!("workload done in {:?}", started.elapsed());
    // A positive control through the same capture: a canary secret logged on
    // purpose must be found.
    let canary = PrefixSecret::from(*b"CanaryCanary0123456789abcdefghijklmn");
    tracing::trace!(bytes = ?canary.as_bytes(), "canary as a byte list");
    tracing::debug!("canary as hex: {}", hex(canary.as_bytes(), false));
    let records = transcript.take();
    let logs = captured.text();
    let canaries = LeakScanner::new(std::slice::from_ref(&canary)).scan(&logs, "tracing output");
    assert!(
        canaries.len() >= 2,
        "the canary was not found: {canaries:?}"
    );
    println!(
        "scanned {} transcript strings ({} bytes) and {} bytes of TRACE logs",
        records.len(),
        records.iter().map(String::len).sum::<usize>(),
        logs.len()
    );
    // The capture worked: it holds the stack's own events, naming streams.
    assert!(logs.contains("TRACE"), "no TRACE output was captured");
    assert!(
        workload
            .streams
            .iter()
            .any(|s| logs.contains(s.path.as_str())),
        "the captured logs never name a stream"
    );
    assert!(records.len() > workload.deliveries.len());

    let scanner = LeakScanner::new(&secrets);
    let mut leaks = scanner.scan(&logs, "tracing output");
    for record in &records {
        leaks.extend(scanner.scan(record, "transcript"));
    }
    for (source, text) in records
        .iter()
        .map(|r| ("transcript", r))
        .chain([("tracing output", &logs)])
    {
        if let Some(at) = text.find(TOKEN) {
            leaks.push(format!("the bearer token in {source} at byte {at}"));
        }
    }
    leaks.sort();
    leaks.dedup();
    println!("scanned in {:?}", started.elapsed());
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}

/// Finds runs of a secret's bytes in text, in every encoding listed in the
/// file's docs.
struct LeakScanner {
    /// Patterns (each at least 4 bytes) by their first 4 bytes, with what each
    /// is.
    by_prefix: HashMap<[u8; 4], Vec<(Vec<u8>, String)>>,
    /// Which 2-byte starts any pattern has: a cheap first filter.
    starts: Vec<bool>,
}

/// Windows of `width` characters every `stride` characters of `encoded` (all of
/// it if shorter): any substring of at least `width + stride - 1` characters
/// contains one.
fn windows(encoded: &str, width: usize, stride: usize) -> Vec<String> {
    let chars: Vec<char> = encoded.chars().collect();
    if chars.len() <= width {
        return vec![encoded.to_owned()];
    }
    (0..=chars.len() - width)
        .step_by(stride)
        .chain([chars.len() - width])
        .map(|start| chars[start..start + width].iter().collect())
        .collect()
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// Base64 (RFC 4648): the standard or URL-safe alphabet, padded or not.
fn base64(bytes: &[u8], url_safe: bool, pad: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

impl LeakScanner {
    fn new(secrets: &[PrefixSecret]) -> LeakScanner {
        let mut scanner = LeakScanner {
            by_prefix: HashMap::new(),
            starts: vec![false; 1 << 16],
        };
        let mut add = |pattern: String, what: String| {
            let bytes = pattern.into_bytes();
            let prefix: [u8; 4] = bytes[..4].try_into().unwrap();
            scanner.starts[usize::from(bytes[0]) << 8 | usize::from(bytes[1])] = true;
            scanner
                .by_prefix
                .entry(prefix)
                .or_default()
                .push((bytes, what));
        };
        for (n, secret) in secrets.iter().enumerate() {
            let bytes = secret.as_bytes();
            let encodings = [
                ("raw", String::from_utf8_lossy(bytes).into_owned(), 10),
                ("hex", hex(bytes, false), 20),
                ("HEX", hex(bytes, true), 20),
                ("base64", base64(bytes, false, true), 14),
                ("base64 unpadded", base64(bytes, false, false), 14),
                ("base64url", base64(bytes, true, true), 14),
                ("base64url unpadded", base64(bytes, true, false), 14),
            ];
            for (name, encoded, width) in encodings {
                for window in windows(&encoded, width, 2) {
                    add(window, format!("secret #{n} as {name}"));
                }
            }
            // Byte lists, as `{:?}` and `{:x?}` print a `Vec<u8>`: runs of 8.
            for start in (0..=bytes.len() - 8).step_by(2) {
                let run = &bytes[start..start + 8];
                let dec = format!("{run:?}");
                let hex = format!("{run:x?}");
                add(
                    dec[1..dec.len() - 1].to_owned(),
                    format!("secret #{n} as a byte list"),
                );
                add(
                    hex[1..hex.len() - 1].to_owned(),
                    format!("secret #{n} as a hex byte list"),
                );
            }
        }
        scanner
    }

    /// Every pattern found in `text`, described.
    fn scan(&self, text: &str, source: &str) -> Vec<String> {
        let bytes = text.as_bytes();
        let mut found = HashSet::new();
        for at in 0..bytes.len().saturating_sub(3) {
            if !self.starts[usize::from(bytes[at]) << 8 | usize::from(bytes[at + 1])] {
                continue;
            }
            let prefix: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
            let Some(patterns) = self.by_prefix.get(&prefix) else {
                continue;
            };
            for (pattern, what) in patterns {
                if bytes[at..].starts_with(pattern) {
                    let from = text.floor_char_boundary(at.saturating_sub(40));
                    let to = text.ceil_char_boundary((at + pattern.len() + 40).min(text.len()));
                    found.insert(format!("{what} in {source}: …{}…", &text[from..to]));
                }
            }
        }
        found.into_iter().collect()
    }
}

#[test]
fn the_leak_scanner_finds_every_encoding_and_nothing_else() {
    assert_eq!(base64(b"", false, true), "");
    assert_eq!(base64(b"f", false, true), "Zg==");
    assert_eq!(base64(b"fo", false, false), "Zm8");
    assert_eq!(base64(b"foobar", false, true), "Zm9vYmFy");
    assert_eq!(base64(&[0xfb, 0xff], false, true), "+/8=");
    assert_eq!(base64(&[0xfb, 0xff], true, false), "-_8");

    let secret = PrefixSecret::from(*b"Sx3kP0qLm9ZtR2vN8bYw4HcJ6dFg1AeU7iOo");
    let bytes = secret.as_bytes();
    let scanner = LeakScanner::new(std::slice::from_ref(&secret));
    let leaked = [
        String::from_utf8_lossy(&bytes[5..17]).into_owned(),
        hex(&bytes[20..31], false),
        hex(bytes, true),
        base64(bytes, false, true),
        base64(&bytes[..12], true, false),
        format!("{:?}", &bytes[3..13]),
        format!("{:x?}", bytes.to_vec()),
    ];
    for leak in &leaked {
        let text = format!("some log line: value={leak} and more");
        assert!(!scanner.scan(&text, "test").is_empty(), "missed {leak}");
    }
    // Lengths, redacted Debug and unrelated hex are not leaks.
    let clean = format!(
        "{secret:?} {:?} {}",
        PrefixSecret::from_bytes(&bytes[..35]).unwrap_err(),
        "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad"
    );
    assert_eq!(scanner.scan(&clean, "test"), Vec::<String>::new());
}
