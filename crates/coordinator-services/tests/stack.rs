//! The whole stack over an in-memory `ServicesClient`: validation, retries with
//! backoff, batching with dropped and shuffled answers, the overall deadline,
//! the attempt timeout and the concurrency limit. No network, no tonic.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coordinator_api::{
    Code, Coordinator, CoordinatorFuture, Error, MessageIndex, RegisterRequest, StreamId,
    TerminateRequest,
};
use coordinator_services::proto::logdog as proto;
use coordinator_services::{
    BatchOptions, CallOptions, RetryPolicy, ServicesClient, ServicesFuture, ServicesStack,
};
use parking_lot::Mutex;
use proto::batch_request::entry::Value as Req;
use proto::batch_response::entry::Value as Answer;
use tokio::time::Instant;

/// An in-memory Coordinator behind the wire-level trait. Register requests
/// carry their stream path in `desc`; the stream ID is the SHA-256 of it.
#[derive(Default)]
struct Memory {
    streams: Mutex<HashMap<String, proto::InternalLogStreamState>>,
    script: Mutex<Script>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// The deadlines calls arrived with.
    deadlines: Mutex<Vec<Option<Instant>>>,
}

#[derive(Default)]
struct Script {
    /// Fail this many calls with `Unavailable` first.
    fail_first: usize,
    /// Leave every n-th entry of the next batches unanswered (0: none).
    drop_every: usize,
    /// How many batches `drop_every` applies to.
    drop_batches: usize,
    /// Answer entries in reverse order.
    shuffle: bool,
    /// Take this long per call.
    latency: Duration,
    /// Never answer.
    hang: bool,
}

impl Memory {
    fn register(&self, r: &proto::RegisterStreamRequest) -> proto::RegisterStreamResponse {
        let path = String::from_utf8_lossy(&r.desc).into_owned();
        let id = match path.parse() {
            Ok(path) => StreamId::for_path(&path).to_string(),
            Err(e) => {
                return proto::RegisterStreamResponse {
                    error: Some(proto::Error {
                        grpc_code: Code::InvalidArgument.as_i32(),
                        transient: false,
                        msg: e.to_string(),
                    }),
                    ..Default::default()
                };
            }
        };
        let state = self
            .streams
            .lock()
            .entry(id.clone())
            .or_insert_with(|| proto::InternalLogStreamState {
                proto_version: r.proto_version.clone(),
                secret: r.secret.clone(),
                terminal_index: r.terminal_index,
                archived: false,
                purged: false,
            })
            .clone();
        proto::RegisterStreamResponse {
            id,
            state: Some(state),
            error: None,
        }
    }

    fn terminate(&self, t: &proto::TerminateStreamRequest) -> Result<(), Error> {
        match self.streams.lock().get_mut(&t.id) {
            Some(state) => {
                state.terminal_index = t.terminal_index;
                Ok(())
            }
            None => Err(Error::not_found("no such stream")),
        }
    }

    /// Runs one call: counts it, applies the scripted faults and latency.
    fn call<'a, T: Send + 'a>(
        &'a self,
        options: CallOptions,
        answer: impl FnOnce(&Memory) -> Result<T, Error> + Send + 'a,
    ) -> ServicesFuture<'a, T> {
        CoordinatorFuture::new(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.deadlines.lock().push(options.deadline);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let (fail, latency, hang) = {
                let mut s = self.script.lock();
                let fail = s.fail_first > 0;
                s.fail_first = s.fail_first.saturating_sub(1);
                (fail, s.latency, s.hang)
            };
            tokio::time::sleep(latency).await;
            if hang {
                std::future::pending::<()>().await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if fail {
                return Err(Error::unavailable("scripted outage"));
            }
            answer(self)
        })
    }
}

impl ServicesClient for Memory {
    fn register_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        self.call(options, move |m| Ok(m.register(request)))
    }

    fn terminate_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        self.call(options, move |m| m.terminate(request))
    }

    fn batch<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        self.call(options, move |m| {
            let (drop_every, shuffle) = {
                let mut s = m.script.lock();
                let drop_every = if s.drop_batches > 0 { s.drop_every } else { 0 };
                s.drop_batches = s.drop_batches.saturating_sub(1);
                (drop_every, s.shuffle)
            };
            let mut resp = Vec::new();
            for (i, entry) in request.req.iter().enumerate() {
                if drop_every > 0 && i % drop_every == 0 {
                    continue;
                }
                let value = match &entry.value {
                    Some(Req::RegisterStream(r)) => Some(Answer::RegisterStream(m.register(r))),
                    Some(Req::TerminateStream(t)) => match m.terminate(t) {
                        Ok(()) => None,
                        Err(e) => Some(Answer::Err(coordinator_services::convert::error_to_wire(
                            &e,
                        ))),
                    },
                    _ => Some(Answer::Err(proto::Error {
                        grpc_code: Code::Unimplemented.as_i32(),
                        transient: false,
                        msg: "not here".into(),
                    })),
                };
                resp.push(proto::batch_response::Entry {
                    index: i as i32,
                    value,
                });
            }
            if shuffle {
                resp.reverse();
            }
            Ok(proto::BatchResponse { resp })
        })
    }
}

fn request(name: &str) -> RegisterRequest {
    RegisterRequest::parse("proj", &format!("pre/+/{name}"), &[4; 36], None).unwrap()
}

fn exact_retry(retries: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(retries)
        .with_jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn invalid_requests_are_refused_before_any_call() {
    let memory = Arc::new(Memory::default());
    let coordinator = ServicesStack::new().build(memory.clone()).unwrap();
    let mut req = request("a");
    req.proto_version = "".into();
    let e = coordinator
        .register_stream(&req, b"pre/+/a")
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.field()),
        (Code::InvalidArgument, Some("proto_version"))
    );
    assert_eq!(memory.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff_direct_and_batched() {
    for batched in [false, true] {
        let memory = Arc::new(Memory::default());
        memory.script.lock().fail_first = 3;
        let mut stack = ServicesStack::new().retry(exact_retry(5));
        if batched {
            stack = stack.batching(BatchOptions::default().with_max_delay(Duration::ZERO));
        }
        let coordinator = stack.build(memory.clone()).unwrap();
        let req = request("a");
        let start = Instant::now();
        let state = coordinator.register_stream(&req, b"pre/+/a").await.unwrap();
        assert_eq!(state.path, req.path);
        // Delays of 1 s, 2 s and 4 s before the fourth attempt succeeds.
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(7),
            "batched: {batched}"
        );
        assert_eq!(memory.calls.load(Ordering::SeqCst), 4);
    }
}

#[tokio::test(start_paused = true)]
async fn batching_survives_dropped_and_shuffled_answers() {
    let memory = Arc::new(Memory::default());
    {
        let mut s = memory.script.lock();
        s.drop_every = 3;
        s.drop_batches = 2;
        s.shuffle = true;
    }
    let coordinator = ServicesStack::new()
        .retry(exact_retry(2))
        .batching(
            BatchOptions::default()
                .with_max_entries(10)
                .with_max_delay(Duration::from_millis(5)),
        )
        .build(memory.clone())
        .unwrap();
    let requests: Vec<_> = (0..30).map(|i| request(&format!("s{i}"))).collect();
    let descs: Vec<String> = requests.iter().map(|r| r.path.to_string()).collect();
    let results = futures_join(&coordinator, &requests, &descs).await;
    for (result, req) in results.into_iter().zip(&requests) {
        let state = result.unwrap();
        assert_eq!(state.path, req.path, "each caller gets its own answer");
        assert_eq!(state.id, StreamId::for_path(&req.path));
    }
    let stats = coordinator.batching_client().unwrap().stats();
    assert!(stats.requeued_entries > 0, "{stats:?}");
    assert!(stats.largest_batch <= 10, "{stats:?}");
    assert_eq!(memory.streams.lock().len(), 30);

    // Terminate them all the same way.
    let terminations: Vec<_> = requests
        .iter()
        .map(|r| TerminateRequest {
            project: r.project.clone(),
            path: r.path.clone(),
            id: StreamId::for_path(&r.path),
            secret: r.secret.clone(),
            terminal_index: MessageIndex::from(3),
        })
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for t in terminations {
        let c = coordinator.clone();
        set.spawn(async move { c.terminate_stream(&t).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert!(
        memory
            .streams
            .lock()
            .values()
            .all(|s| s.terminal_index == 3)
    );
}

async fn futures_join(
    coordinator: &coordinator_services::ServicesCoordinator,
    requests: &[RegisterRequest],
    descs: &[String],
) -> Vec<Result<Arc<coordinator_api::LogStreamState>, Error>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (req, desc)) in requests.iter().zip(descs).enumerate() {
        let (c, req, desc) = (coordinator.clone(), req.clone(), desc.clone());
        set.spawn(async move { (i, c.register_stream(&req, desc.as_bytes()).await) });
    }
    let mut out: Vec<_> = (0..requests.len()).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, result) = r.unwrap();
        out[i] = Some(result);
    }
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_ends_a_hanging_call() {
    let memory = Arc::new(Memory::default());
    memory.script.lock().hang = true;
    let coordinator = ServicesStack::new()
        .attempt_timeout(None)
        .deadline(Duration::from_secs(5))
        .build(memory.clone())
        .unwrap();
    let start = Instant::now();
    let e = coordinator
        .register_stream(&request("a"), b"pre/+/a")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(e.is_transient());
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    // The transport was told the deadline.
    assert_eq!(
        memory.deadlines.lock()[0],
        Some(start + Duration::from_secs(5))
    );
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_bounds_each_attempt_and_is_retried() {
    let memory = Arc::new(Memory::default());
    memory.script.lock().latency = Duration::from_secs(60);
    let coordinator = ServicesStack::new()
        .retry(exact_retry(1))
        .attempt_timeout(Duration::from_secs(2))
        .build(memory.clone())
        .unwrap();
    let start = Instant::now();
    let e = coordinator
        .register_stream(&request("a"), b"pre/+/a")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(e.message().contains("timed out after 2s"), "{e}");
    // 2 s, a 1 s backoff, 2 s.
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(memory.calls.load(Ordering::SeqCst), 2);
    let deadlines = memory.deadlines.lock();
    assert_eq!(deadlines[0], Some(start + Duration::from_secs(2)));
    assert_eq!(deadlines[1], Some(start + Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_limit_holds_under_load() {
    let memory = Arc::new(Memory::default());
    memory.script.lock().latency = Duration::from_millis(10);
    let coordinator = ServicesStack::new()
        .concurrency_limit(3)
        .build(memory.clone())
        .unwrap();
    let requests: Vec<_> = (0..20).map(|i| request(&format!("s{i}"))).collect();
    let descs: Vec<String> = requests.iter().map(|r| r.path.to_string()).collect();
    let start = Instant::now();
    for result in futures_join(&coordinator, &requests, &descs).await {
        result.unwrap();
    }
    assert_eq!(memory.most_in_flight.load(Ordering::SeqCst), 3);
    // 20 calls, 3 at a time, 10 ms each: 7 rounds.
    assert_eq!(start.elapsed(), Duration::from_millis(70));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_answer_is_not_retried() {
    let memory = Arc::new(Memory::default());
    let coordinator = ServicesStack::new()
        .retry(exact_retry(5))
        .build(memory.clone())
        .unwrap();
    let e = coordinator
        .register_stream(&request("a"), b"not a path")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(memory.calls.load(Ordering::SeqCst), 1);
}

/// Panics on its first `panics` calls, then answers registers with `answer`.
struct Hostile {
    panics: AtomicUsize,
    answer: proto::RegisterStreamResponse,
    calls: AtomicUsize,
}

impl ServicesClient for Hostile {
    fn register_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("a transport bug");
        }
        CoordinatorFuture::ready(Ok(self.answer.clone()))
    }

    fn terminate_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        panic!("a transport bug");
    }

    fn batch<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        panic!("a transport bug");
    }
}

fn hostile(panics: usize, id: &str) -> Arc<Hostile> {
    Arc::new(Hostile {
        panics: AtomicUsize::new(panics),
        answer: proto::RegisterStreamResponse {
            id: id.into(),
            state: Some(proto::InternalLogStreamState {
                proto_version: "1".into(),
                secret: vec![4; 36],
                terminal_index: -1,
                archived: false,
                purged: false,
            }),
            error: None,
        },
        calls: AtomicUsize::new(0),
    })
}

const GOOD_ID: &str = "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad";

/// The stack's coordinator leaves panics and answer checks to its retry
/// layer: a panic is still a transient error (and retried), and a malformed
/// answer is still refused, never kept.
#[tokio::test(start_paused = true)]
async fn the_stack_contains_panics_and_refuses_malformed_answers() {
    // A panic, then a good answer: retried, then answered.
    let client = hostile(1, GOOD_ID);
    let coordinator = ServicesStack::new()
        .retry(exact_retry(2))
        .build(client.clone())
        .unwrap();
    let state = coordinator
        .register_stream(&request("a"), b"desc")
        .await
        .unwrap();
    assert_eq!(state.id.as_str(), GOOD_ID);
    assert_eq!(client.calls.load(Ordering::SeqCst), 2);

    // Only panics, no retries: a transient error that says so.
    let client = hostile(usize::MAX, GOOD_ID);
    let coordinator = ServicesStack::new()
        .retry(RetryPolicy::none())
        .build(client.clone())
        .unwrap();
    let e = coordinator
        .register_stream(&request("a"), b"desc")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(
        e.is_transient() && e.to_string().contains("panicked"),
        "{e}"
    );
    let request_t = TerminateRequest::parse("proj", "pre/+/a", GOOD_ID, &[4; 36], 3).unwrap();
    let e = coordinator.terminate_stream(&request_t).await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("panicked"),
        "{e}"
    );

    // An ID LogDog never issues (upper case): refused as malformed, retried,
    // and the error names the field.
    let client = hostile(0, &GOOD_ID.to_uppercase());
    let coordinator = ServicesStack::new()
        .retry(exact_retry(1))
        .build(client.clone())
        .unwrap();
    let e = coordinator
        .register_stream(&request("a"), b"desc")
        .await
        .unwrap_err();
    assert!(e.is_transient() && e.to_string().contains("id"), "{e}");
    assert_eq!(client.calls.load(Ordering::SeqCst), 2);
}

#[cfg(feature = "serde")]
#[test]
fn the_configuration_reads_from_json_with_readable_durations() {
    let stack: ServicesStack = serde_json::from_str(
        r#"{
            "retry": {"max_retries": 3, "initial_delay": "250ms", "jitter": 0.0},
            "attempt_timeout": "10s",
            "deadline": null,
            "batching": {"max_delay": "5ms", "max_entries": 50}
        }"#,
    )
    .unwrap();
    assert_eq!(
        stack.retry,
        exact_retry(3).with_initial_delay(Duration::from_millis(250))
    );
    assert_eq!(stack.attempt_timeout, Some(Duration::from_secs(10)));
    assert_eq!(stack.deadline, None);
    assert_eq!(
        stack.batching,
        Some(
            BatchOptions::default()
                .with_max_delay(Duration::from_millis(5))
                .with_max_entries(50)
        )
    );
    // Fields left out keep their defaults; unknown ones are refused.
    let defaults: ServicesStack = serde_json::from_str("{}").unwrap();
    assert_eq!(defaults, ServicesStack::default());
    assert!(serde_json::from_str::<ServicesStack>(r#"{"retries": 1}"#).is_err());
    let json = serde_json::to_string(&ServicesStack::default()).unwrap();
    assert!(json.contains(r#""attempt_timeout":"30s""#), "{json}");
}
