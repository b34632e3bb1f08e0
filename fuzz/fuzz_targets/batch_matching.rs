//! Batch response matching, end to end through `BatchingClient`: up to 24
//! callers (RegisterStream and TerminateStream through a `ServicesCoordinator`,
//! some of which give up after a while) send through a scripted
//! `ServicesClient` whose `Batch` answers come from the input: structured
//! responses (any index, duplicates, out of range, more answers than entries,
//! answers of the wrong kind, malformed register responses, long error
//! messages, delays), whole-RPC failures, panics (while making the call or
//! while it runs), and raw bytes decoded as a `BatchResponse` with prost. Time
//! is Tokio's paused clock, so a run is deterministic and takes no real time.
//!
//! Checked, for every input: no panic escapes; every caller that waits gets
//! exactly one outcome (none hangs); each outcome is the one the rules of
//! `docs/behaviour.md` §5 give for the last batch its entry went out in (the
//! RPC's error; a transient `Internal` error for a panic in the transport, for
//! a response with no answers or with more answers than entries, for an answer
//! of the wrong kind or a RegisterStream entry answered with no value; the
//! first answer at its index, mapped; or, after `max_requeues` re-queues, a
//! transient `Unavailable` error), and in every earlier batch its entry was
//! left unanswered (that is why it was re-queued); an entry goes out at most
//! `max_requeues + 1` times and at most once per batch; batches respect
//! `max_entries` and `max_bytes`; every Batch call is bounded by
//! `response_size_limit(entries)`; only `batch` is called on the transport;
//! the client's stats (batches, entries, largest batch, failed batches,
//! re-queued entries, ignored answers) match what the transport saw.
#![no_main]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use arbitrary::Arbitrary;
use coordinator_api::{
    Code, Coordinator, CoordinatorFuture, Error, LogStreamState, RegisterRequest, StreamId,
    TerminateRequest,
};
use coordinator_grpc::convert::error_from_status;
use coordinator_services::convert::{error_from_wire, state_from_wire};
use coordinator_services::proto::logdog as proto;
use coordinator_services::{
    BatchOptions, BatchStats, BatchingClient, CallOptions, ServicesClient, ServicesCoordinator,
    ServicesFuture, response_size_limit,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::batch_request::entry::Value as RequestValue;
use proto::batch_response::entry::Value as AnswerValue;

const MAX_CALLS: usize = 24;
const MAX_SCRIPT: usize = 16;

/// The payload of the scripted transport's panics. libfuzzer-sys's panic hook
/// aborts the process on any panic, caught or not; `allow_scripted_panics`
/// lets this one unwind, so that the client's catching it is what is tested.
const SCRIPTED_PANIC: &str = "scripted transport panic";

#[derive(Arbitrary, Debug)]
struct Input {
    calls: Vec<Call>,
    max_entries: u8,
    /// A byte threshold (a few entries' worth); the default (31 MiB) if absent.
    max_bytes: Option<u16>,
    max_requeues: u8,
    script: Vec<Reply>,
}

#[derive(Arbitrary, Debug)]
struct Call {
    register: bool,
    /// The caller drops its call after this many (virtual) milliseconds.
    give_up_after_ms: Option<u16>,
}

/// The transport's answer to one batch, in the order batches are sent. When
/// the script runs out, batches are answered correctly and in full.
#[derive(Arbitrary, Debug)]
enum Reply {
    Answers {
        answers: Vec<Answer>,
        delay_ms: u16,
    },
    Fail {
        code: i32,
        /// Whether the status has a message.
        message: bool,
        delay_ms: u16,
    },
    /// The transport panics: while making the call's future, or while the
    /// future runs (after the delay).
    Panic {
        while_polling: bool,
        delay_ms: u16,
    },
    /// Decoded with prost; bytes that do not decode are an `Internal` failure
    /// of the RPC (what a transport reports for an undecodable message).
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Answer {
    index: Index,
    value: Value,
}

#[derive(Arbitrary, Debug)]
enum Index {
    /// A position in `0..32` (so often in range).
    Position(u8),
    /// Any wire value: negative, huge.
    Wire(i32),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Nothing,
    Error {
        code: i32,
        transient: bool,
        /// How many times a 3-byte character is repeated in the message (past
        /// the 4096-byte limit from 1366 on).
        long: u16,
    },
    Register {
        id: IdKind,
        secret_len: u8,
        terminal_index: i64,
        /// The protocol version's length ("1" if 0; over 32 is malformed).
        proto_version_len: u8,
    },
    Load,
}

#[derive(Arbitrary, Debug)]
enum IdKind {
    /// The stream's own ID.
    Good,
    /// Not 64 characters.
    Short,
    /// The stream's ID in uppercase.
    Uppercase,
}

/// What the transport did with one batch.
#[derive(Debug, Clone)]
enum Result3 {
    /// The RPC's result, as the transport returned it.
    Returned(Result<proto::BatchResponse, Error>),
    /// The transport panicked.
    Panicked,
}

/// One batch as the transport saw it: which caller each entry belongs to, and
/// what it answered.
#[derive(Debug)]
struct Sent {
    /// Each entry's caller (`None`: an entry the client should never send).
    callers: Vec<Option<usize>>,
    /// The encoded request's size.
    bytes: usize,
    options: CallOptions,
    result: Result3,
}

/// What the transport saw.
#[derive(Debug, Default)]
struct Log {
    batches: Vec<Sent>,
    /// Calls other than `batch`.
    other_calls: Vec<&'static str>,
}

struct ScriptedTransport {
    script: Mutex<VecDeque<Reply>>,
    log: Arc<Mutex<Log>>,
}

fn path_of(caller: usize) -> String {
    format!("pre/+/s{caller}")
}

fn register_request(caller: usize) -> RegisterRequest {
    RegisterRequest::parse("proj", &path_of(caller), &[3; 36], None).expect("a valid request")
}

fn terminate_request(caller: usize) -> TerminateRequest {
    let id = StreamId::for_path(&path_of(caller).parse().expect("a valid path"));
    TerminateRequest::parse(
        "proj",
        &path_of(caller),
        &id.as_str(),
        &[3; 36],
        caller as i64,
    )
    .expect("a valid request")
}

/// The caller an entry belongs to: registers carry it in `desc`, terminates in
/// the terminal index. `None` for anything else (checked after the run: a
/// panic in the transport would be caught by the client).
fn caller_of(entry: &proto::batch_request::Entry) -> Option<usize> {
    match &entry.value {
        Some(RequestValue::RegisterStream(r)) => {
            Some(usize::from_le_bytes(r.desc.as_slice().try_into().ok()?))
        }
        Some(RequestValue::TerminateStream(t)) => usize::try_from(t.terminal_index).ok(),
        _ => None,
    }
}

fn good_register_response(caller: usize) -> proto::RegisterStreamResponse {
    let path = path_of(caller).parse().expect("a valid path");
    proto::RegisterStreamResponse {
        id: StreamId::for_path(&path).as_str().to_owned(),
        state: Some(proto::InternalLogStreamState {
            proto_version: "1".into(),
            secret: vec![3; 36],
            terminal_index: -1,
            archived: false,
            purged: false,
        }),
        error: None,
    }
}

fn answer_value(value: &Value, caller: Option<usize>) -> Option<AnswerValue> {
    match *value {
        Value::Nothing => None,
        Value::Error {
            code,
            transient,
            long,
        } => Some(AnswerValue::Err(proto::Error {
            grpc_code: code,
            transient,
            msg: format!("entry error {code} {}", "€".repeat(usize::from(long))),
        })),
        Value::Register {
            ref id,
            secret_len,
            terminal_index,
            proto_version_len,
        } => {
            let mut response = good_register_response(caller.unwrap_or(0));
            match id {
                IdKind::Good => {}
                IdKind::Short => response.id = "not an id".into(),
                IdKind::Uppercase => response.id = response.id.to_uppercase(),
            }
            if let Some(state) = &mut response.state {
                state.secret = vec![3; usize::from(secret_len)];
                state.terminal_index = terminal_index;
                if proto_version_len > 0 {
                    state.proto_version = "v".repeat(usize::from(proto_version_len));
                }
            }
            Some(AnswerValue::RegisterStream(response))
        }
        Value::Load => Some(AnswerValue::LoadStream(Default::default())),
    }
}

impl ScriptedTransport {
    fn unexpected<T>(&self, call: &'static str) -> ServicesFuture<'_, T> {
        self.log.lock().expect("log lock").other_calls.push(call);
        CoordinatorFuture::ready(Err(Error::unavailable("the script answers only batches")))
    }
}

impl ServicesClient for ScriptedTransport {
    fn register_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        self.unexpected("register_stream")
    }

    fn terminate_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        self.unexpected("terminate_stream")
    }

    fn load_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::LoadStreamRequest,
    ) -> ServicesFuture<'a, proto::LoadStreamResponse> {
        self.unexpected("load_stream")
    }

    fn batch<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        let callers: Vec<Option<usize>> = request.req.iter().map(caller_of).collect();
        let bytes = request.encoded_len();
        let reply = self.script.lock().expect("script lock").pop_front();
        let (result, delay_ms) = match reply {
            None => {
                let resp = request
                    .req
                    .iter()
                    .zip(&callers)
                    .enumerate()
                    .map(|(i, (entry, &caller))| proto::batch_response::Entry {
                        index: i as i32,
                        value: match entry.value {
                            Some(RequestValue::RegisterStream(_)) => {
                                Some(AnswerValue::RegisterStream(good_register_response(
                                    caller.unwrap_or(0),
                                )))
                            }
                            _ => None,
                        },
                    })
                    .collect();
                (Result3::Returned(Ok(proto::BatchResponse { resp })), 0)
            }
            Some(Reply::Answers { answers, delay_ms }) => {
                let resp = answers
                    .iter()
                    .map(|a| {
                        let index = match a.index {
                            Index::Position(p) => i32::from(p % 32),
                            Index::Wire(w) => w,
                        };
                        let caller = usize::try_from(index)
                            .ok()
                            .and_then(|i| callers.get(i).copied().flatten());
                        proto::batch_response::Entry {
                            index,
                            value: answer_value(&a.value, caller),
                        }
                    })
                    .collect();
                (
                    Result3::Returned(Ok(proto::BatchResponse { resp })),
                    delay_ms,
                )
            }
            Some(Reply::Fail {
                code,
                message,
                delay_ms,
            }) => {
                // What GrpcServices makes of a failed RPC's status.
                let message = if message { "the Batch RPC failed" } else { "" };
                let status = tonic::Status::new(tonic::Code::from_i32(code), message);
                (Result3::Returned(Err(error_from_status(&status))), delay_ms)
            }
            Some(Reply::Panic {
                while_polling,
                delay_ms,
            }) => {
                self.log.lock().expect("log lock").batches.push(Sent {
                    callers,
                    bytes,
                    options,
                    result: Result3::Panicked,
                });
                if !while_polling {
                    std::panic::panic_any(SCRIPTED_PANIC);
                }
                return CoordinatorFuture::new(async move {
                    tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
                    std::panic::panic_any(SCRIPTED_PANIC)
                });
            }
            Some(Reply::Raw(bytes)) => (
                Result3::Returned(
                    proto::BatchResponse::decode(bytes.as_slice())
                        .map_err(|e| Error::internal(format!("decoding the response: {e}"))),
                ),
                0,
            ),
        };
        self.log.lock().expect("log lock").batches.push(Sent {
            callers,
            bytes,
            options,
            result: result.clone(),
        });
        let Result3::Returned(result) = result else {
            unreachable!("panics return above");
        };
        CoordinatorFuture::new(async move {
            tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
            result
        })
    }
}

/// Lets the scripted transport's panics unwind (to the client, which must
/// catch them); every other panic still goes to libfuzzer-sys's hook, which
/// aborts and reports it.
fn allow_scripted_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&SCRIPTED_PANIC) {
                fuzzer_hook(info);
            }
        }));
    });
}

/// What a caller got: a register's state, a terminate's success, or an error.
type Outcome = Result<Option<LogStreamState>, Error>;

fuzz_target!(|input: Input| run(input));

fn run(input: Input) {
    allow_scripted_panics();
    let calls = &input.calls[..input.calls.len().min(MAX_CALLS)];
    if calls.is_empty() {
        return;
    }
    let max_requeues = u32::from(input.max_requeues % 4);
    let max_entries = 1 + usize::from(input.max_entries) % MAX_CALLS;
    let max_bytes = input
        .max_bytes
        .map_or(BatchOptions::default().max_bytes, |b| usize::from(b % 1024));
    let options = BatchOptions::default()
        .with_max_entries(max_entries)
        .with_max_bytes(max_bytes)
        .with_max_delay(Duration::from_millis(100))
        .with_max_requeues(max_requeues);
    let log = Arc::new(Mutex::new(Log::default()));
    let transport = ScriptedTransport {
        script: Mutex::new(input.script.into_iter().take(MAX_SCRIPT).collect()),
        log: log.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");

    let (outcomes, stats) = runtime.block_on(async {
        let client = BatchingClient::new(transport, options).expect("inside a runtime");
        let mut tasks = tokio::task::JoinSet::new();
        for (caller, call) in calls.iter().enumerate() {
            let coordinator = ServicesCoordinator::new(client.clone());
            let register = call.register;
            let give_up = call.give_up_after_ms;
            tasks.spawn(async move {
                let call = async {
                    if register {
                        let request = register_request(caller);
                        let desc = caller.to_le_bytes();
                        coordinator
                            .register_stream(&request, &desc)
                            .await
                            .map(|state| Some((*state).clone()))
                    } else {
                        coordinator
                            .terminate_stream(&terminate_request(caller))
                            .await
                            .map(|()| None)
                    }
                };
                let outcome: Option<Outcome> = match give_up {
                    Some(ms) => tokio::time::timeout(Duration::from_millis(u64::from(ms)), call)
                        .await
                        .ok(),
                    None => Some(call.await),
                };
                (caller, outcome)
            });
        }
        let mut outcomes: Vec<Option<Option<Outcome>>> = vec![None; calls.len()];
        let all = async {
            while let Some(joined) = tasks.join_next().await {
                let (caller, outcome) = joined.expect("a caller task panicked");
                assert!(outcomes[caller].is_none(), "caller {caller} finished twice");
                outcomes[caller] = Some(outcome);
            }
        };
        // Virtual time: a hung caller shows up as this timeout, not a stall.
        tokio::time::timeout(Duration::from_secs(24 * 3600), all)
            .await
            .expect("a caller never got an answer");
        tokio::time::timeout(Duration::from_secs(3600), client.close())
            .await
            .expect("close never returned");
        assert!(client.is_closed());
        (outcomes, client.stats())
    });

    let log = log.lock().expect("log lock");
    assert!(
        log.other_calls.is_empty(),
        "the batching client called {:?} on its transport",
        log.other_calls
    );
    check(
        calls,
        (max_entries, max_bytes),
        max_requeues,
        &outcomes,
        &log.batches,
        stats,
    );
}

/// True if the batch's response is malformed as a whole: no answers, or more
/// answers than entries.
fn malformed(response: &proto::BatchResponse, entries: usize) -> bool {
    response.resp.is_empty() || response.resp.len() > entries
}

/// Answers of a well-formed response that are ignored: every answer but the
/// first at each index in range.
fn ignored(response: &proto::BatchResponse, entries: usize) -> u64 {
    let answered: HashSet<usize> = response
        .resp
        .iter()
        .filter_map(|a| usize::try_from(a.index).ok())
        .filter(|&i| i < entries)
        .collect();
    (response.resp.len() - answered.len()) as u64
}

fn check(
    calls: &[Call],
    (max_entries, max_bytes): (usize, usize),
    max_requeues: u32,
    outcomes: &[Option<Option<Outcome>>],
    log: &[Sent],
    stats: BatchStats,
) {
    let mut appearances = vec![Vec::new(); calls.len()];
    for (b, sent) in log.iter().enumerate() {
        let entries = sent.callers.len();
        assert!(entries > 0, "an empty batch was sent");
        assert!(entries <= max_entries, "batch {b} is too large");
        // Only an entry too large on its own goes past the byte threshold.
        assert!(
            sent.bytes <= max_bytes || entries == 1,
            "batch {b} has {} bytes",
            sent.bytes
        );
        assert_eq!(
            sent.options.max_response_size,
            Some(response_size_limit(entries)),
            "batch {b}'s call is not bounded by what {entries} entries can be answered with"
        );
        for (position, &caller) in sent.callers.iter().enumerate() {
            let caller = caller
                .filter(|&c| c < calls.len())
                .unwrap_or_else(|| panic!("batch {b} entry {position} is no caller's"));
            assert!(
                appearances[caller].last().map(|&(last, _)| last) != Some(b),
                "caller {caller} twice in batch {b}"
            );
            appearances[caller].push((b, position));
        }
    }
    let mut gave_up = false;
    let mut resent = 0u64;
    for (caller, call) in calls.iter().enumerate() {
        let seen = &appearances[caller];
        assert!(
            seen.len() <= max_requeues as usize + 1,
            "caller {caller} was sent {} times",
            seen.len()
        );
        resent += seen.len().saturating_sub(1) as u64;
        // Every batch but the last left the entry unanswered.
        for &(b, position) in seen.iter().rev().skip(1) {
            let Result3::Returned(Ok(response)) = &log[b].result else {
                panic!("caller {caller} was re-sent after a failed or panicked RPC");
            };
            assert!(
                !malformed(response, log[b].callers.len()),
                "caller {caller} re-sent after a malformed response"
            );
            assert!(
                first_answer(response, position).is_none(),
                "caller {caller} re-sent after an answer"
            );
        }
        let outcome = outcomes[caller]
            .as_ref()
            .unwrap_or_else(|| panic!("caller {caller} has no outcome"));
        let Some(outcome) = outcome else {
            assert!(call.give_up_after_ms.is_some());
            gave_up = true;
            continue;
        };
        if let Err(error) = outcome {
            // Code documents OK as "not an error".
            assert_ne!(error.code(), Code::Ok, "caller {caller}: {error:?}");
            assert!(!error.message().is_empty(), "caller {caller}: {error:?}");
        }
        let &(b, position) = seen
            .last()
            .unwrap_or_else(|| panic!("caller {caller} answered without being sent: {outcome:?}"));
        let sent = &log[b];
        match expected_outcome(caller, call.register, sent, position) {
            Expected::Exactly(expected) => assert_eq!(outcome, &expected, "caller {caller}"),
            Expected::Error {
                code,
                transient,
                says,
            } => {
                let error = outcome.as_ref().expect_err("an error");
                assert_eq!(error.code(), code, "caller {caller}: {error:?}");
                assert_eq!(
                    error.is_transient(),
                    transient,
                    "caller {caller}: {error:?}"
                );
                assert!(
                    error.message().contains(&says),
                    "caller {caller}: {error:?}"
                );
            }
            Expected::Unanswered => {
                // Unanswered in its last batch: its re-queues are used up.
                assert_eq!(seen.len(), max_requeues as usize + 1, "caller {caller}");
                let error = outcome.as_ref().expect_err("unanswered is an error");
                assert_eq!(error.code(), Code::Unavailable);
                assert!(error.is_transient());
                assert!(error.message().contains("unanswered"), "{error:?}");
            }
        }
    }

    let sizes = log.iter().map(|s| s.callers.len() as u64);
    assert_eq!(stats.batches_sent, log.len() as u64);
    assert_eq!(stats.entries_sent, sizes.clone().sum::<u64>());
    assert_eq!(stats.largest_batch, sizes.max().unwrap_or(0));
    let failed = log
        .iter()
        .filter(|s| match &s.result {
            Result3::Returned(Ok(response)) => malformed(response, s.callers.len()),
            Result3::Returned(Err(_)) | Result3::Panicked => true,
        })
        .count() as u64;
    assert_eq!(stats.failed_batches, failed);
    let ignored_answers: u64 = log
        .iter()
        .map(|s| match &s.result {
            Result3::Returned(Ok(response)) if !malformed(response, s.callers.len()) => {
                ignored(response, s.callers.len())
            }
            _ => 0,
        })
        .sum();
    assert_eq!(stats.ignored_answers, ignored_answers);
    if gave_up {
        assert!(stats.requeued_entries >= resent);
    } else {
        assert_eq!(stats.requeued_entries, resent);
        assert_eq!(stats.abandoned_entries, 0);
    }
}

fn first_answer(
    response: &proto::BatchResponse,
    position: usize,
) -> Option<&proto::batch_response::Entry> {
    response
        .resp
        .iter()
        .find(|a| usize::try_from(a.index).ok() == Some(position))
}

/// What the rules say a caller gets from the last batch its entry went out in.
#[derive(Debug)]
enum Expected {
    /// Exactly this outcome.
    Exactly(Outcome),
    /// An error of this code and transience whose message contains the text.
    Error {
        code: Code,
        transient: bool,
        says: String,
    },
    /// The batch left the entry unanswered.
    Unanswered,
}

/// A transient `Internal` error saying `says`.
fn internal(says: impl Into<String>) -> Expected {
    Expected::Error {
        code: Code::Internal,
        transient: true,
        says: says.into(),
    }
}

fn expected_outcome(caller: usize, register: bool, sent: &Sent, position: usize) -> Expected {
    let entries = sent.callers.len();
    let response = match &sent.result {
        Result3::Panicked => return internal(format!("the Batch call panicked: {SCRIPTED_PANIC}")),
        Result3::Returned(Err(error)) => return Expected::Exactly(Err(error.clone())),
        Result3::Returned(Ok(response)) => response,
    };
    if response.resp.is_empty() {
        return internal("with no entries");
    }
    if response.resp.len() > entries {
        return internal(format!(
            "invalid response from the Coordinator: resp: {} answers for a batch of {entries} entries",
            response.resp.len()
        ));
    }
    let Some(answer) = first_answer(response, position) else {
        return Expected::Unanswered;
    };
    match (&answer.value, register) {
        (Some(AnswerValue::Err(wire)), _) => Expected::Exactly(Err(error_from_wire(wire))),
        // The adapter maps the response (checked on its own by `response_mapping`).
        (Some(AnswerValue::RegisterStream(r)), true) => {
            Expected::Exactly(state_from_wire(&register_request(caller), r.clone()).map(Some))
        }
        (None, false) => Expected::Exactly(Ok(None)),
        // No value for a register, or an answer of the wrong kind: malformed.
        _ => internal("invalid response from the Coordinator: resp.value: "),
    }
}
