//! Batch response matching, end to end through `BatchingClient`: up to 24
//! callers (RegisterStream and TerminateStream, some of which give up after a
//! while) send through a scripted `BatchTransport` whose answers come from the
//! input: structured responses (any index, duplicates, out of range, answers of
//! the wrong kind, malformed register responses, delays), whole-RPC failures,
//! and raw bytes decoded as a `BatchResponse` with prost. Time is Tokio's paused
//! clock, so a run is deterministic and takes no real time.
//!
//! Checked, for every input: no panic; every caller that waits gets exactly one
//! outcome (none hangs); each outcome is the one the rules give for the last
//! batch its entry went out in (the RPC's error; a transient `Internal` error
//! for an empty response; the first answer at its index, mapped; or, after
//! `max_requeues` re-queues, a transient `Unavailable` error), and in every
//! earlier batch its entry was left unanswered (that is why it was re-queued);
//! an entry goes out at most `max_requeues + 1` times and at most once per
//! batch; batches respect `max_entries` and `max_bytes`; the client's stats
//! match what the transport saw.
#![no_main]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::Arbitrary;
use coordinator_api::{
    Code, Coordinator, CoordinatorFuture, Error, LogStreamState, RegisterRequest, StreamId,
    TerminateRequest,
};
use coordinator_grpc::convert::{error_from_status, error_from_wire, state_from_wire};
use coordinator_grpc::proto::logdog as proto;
use coordinator_grpc::{BatchOptions, BatchTransport, BatchingClient};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::batch_request::entry::Value as RequestValue;
use proto::batch_response::entry::Value as AnswerValue;

const MAX_CALLS: usize = 24;
const MAX_SCRIPT: usize = 16;

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
    /// Decoded with prost; bytes that do not decode are an `Internal` failure
    /// of the RPC (what tonic reports for an undecodable message).
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
    },
    Register {
        good_id: bool,
        secret_len: u8,
        terminal_index: i64,
        proto_version_one: bool,
    },
    Load,
}

/// One batch as the transport saw it: which caller each entry belongs to, and
/// what it answered.
#[derive(Debug)]
struct Sent {
    callers: Vec<usize>,
    /// The encoded request's size.
    bytes: usize,
    result: Result<proto::BatchResponse, Error>,
}

struct ScriptedTransport {
    script: Mutex<VecDeque<Reply>>,
    log: Arc<Mutex<Vec<Sent>>>,
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
        id.as_str(),
        &[3; 36],
        caller as i64,
    )
    .expect("a valid request")
}

/// The caller an entry belongs to: registers carry it in `desc`, terminates in
/// the terminal index.
fn caller_of(entry: &proto::batch_request::Entry) -> usize {
    match &entry.value {
        Some(RequestValue::RegisterStream(r)) => {
            usize::from_le_bytes(r.desc.as_slice().try_into().expect("8-byte desc"))
        }
        Some(RequestValue::TerminateStream(t)) => {
            usize::try_from(t.terminal_index).expect("a caller number")
        }
        other => panic!("the batching client sent an unexpected entry: {other:?}"),
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
        Value::Error { code, transient } => Some(AnswerValue::Err(proto::Error {
            grpc_code: code,
            transient,
            msg: format!("entry error {code}"),
        })),
        Value::Register {
            good_id,
            secret_len,
            terminal_index,
            proto_version_one,
        } => {
            let mut response = good_register_response(caller.unwrap_or(0));
            if !good_id {
                response.id = "not an id".into();
            }
            if let Some(state) = &mut response.state {
                state.secret = vec![3; usize::from(secret_len)];
                state.terminal_index = terminal_index;
                if !proto_version_one {
                    state.proto_version = "2".into();
                }
            }
            Some(AnswerValue::RegisterStream(response))
        }
        Value::Load => Some(AnswerValue::LoadStream(Default::default())),
    }
}

impl BatchTransport for ScriptedTransport {
    fn send_batch(
        &self,
        request: proto::BatchRequest,
    ) -> CoordinatorFuture<'static, Result<proto::BatchResponse, Error>> {
        let callers: Vec<usize> = request.req.iter().map(caller_of).collect();
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
                                Some(AnswerValue::RegisterStream(good_register_response(caller)))
                            }
                            _ => None,
                        },
                    })
                    .collect();
                (Ok(proto::BatchResponse { resp }), 0)
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
                            .and_then(|i| callers.get(i).copied());
                        proto::batch_response::Entry {
                            index,
                            value: answer_value(&a.value, caller),
                        }
                    })
                    .collect();
                (Ok(proto::BatchResponse { resp }), delay_ms)
            }
            Some(Reply::Fail {
                code,
                message,
                delay_ms,
            }) => {
                // What GrpcCoordinator makes of a failed RPC's status.
                let message = if message { "the Batch RPC failed" } else { "" };
                let status = tonic::Status::new(tonic::Code::from_i32(code), message);
                (Err(error_from_status(&status)), delay_ms)
            }
            Some(Reply::Raw(bytes)) => (
                proto::BatchResponse::decode(bytes.as_slice())
                    .map_err(|e| Error::internal(format!("decoding the response: {e}"))),
                0,
            ),
        };
        self.log.lock().expect("log lock").push(Sent {
            callers,
            bytes,
            result: result.clone(),
        });
        CoordinatorFuture::new(async move {
            tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
            result
        })
    }
}

/// What a caller got: a register's state, a terminate's success, or an error.
type Outcome = Result<Option<LogStreamState>, Error>;

fuzz_target!(|input: Input| run(input));

fn run(input: Input) {
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
    let log = Arc::new(Mutex::new(Vec::new()));
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
            let client = client.clone();
            let register = call.register;
            let give_up = call.give_up_after_ms;
            tasks.spawn(async move {
                let call = async {
                    if register {
                        let request = register_request(caller);
                        let desc = caller.to_le_bytes();
                        client
                            .register_stream(&request, &desc)
                            .await
                            .map(|state| Some((*state).clone()))
                    } else {
                        client
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
    check(
        calls,
        (max_entries, max_bytes),
        max_requeues,
        &outcomes,
        &log,
        stats,
    );
}

fn check(
    calls: &[Call],
    (max_entries, max_bytes): (usize, usize),
    max_requeues: u32,
    outcomes: &[Option<Option<Outcome>>],
    log: &[Sent],
    stats: coordinator_grpc::BatchStats,
) {
    let mut appearances = vec![Vec::new(); calls.len()];
    for (b, sent) in log.iter().enumerate() {
        assert!(!sent.callers.is_empty(), "an empty batch was sent");
        assert!(sent.callers.len() <= max_entries, "batch {b} is too large");
        // Only an entry too large on its own goes past the byte threshold.
        assert!(
            sent.bytes <= max_bytes || sent.callers.len() == 1,
            "batch {b} has {} bytes",
            sent.bytes
        );
        for (position, &caller) in sent.callers.iter().enumerate() {
            assert!(caller < calls.len(), "unknown caller {caller}");
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
            let Ok(response) = &log[b].result else {
                panic!("caller {caller} was re-sent after a failed RPC");
            };
            assert!(!response.resp.is_empty(), "re-sent after an empty response");
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
        match expected_outcome(caller, call.register, &log[b].result, position) {
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
                assert!(error.message().contains(says), "caller {caller}: {error:?}");
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
        .filter(|s| s.result.as_ref().map_or(true, |r| r.resp.is_empty()))
        .count() as u64;
    assert_eq!(stats.failed_batches, failed);
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
        says: &'static str,
    },
    /// The batch left the entry unanswered.
    Unanswered,
}

fn expected_outcome(
    caller: usize,
    register: bool,
    result: &Result<proto::BatchResponse, Error>,
    position: usize,
) -> Expected {
    let response = match result {
        Err(error) => return Expected::Exactly(Err(error.clone())),
        Ok(response) => response,
    };
    if response.resp.is_empty() {
        return Expected::Error {
            code: Code::Internal,
            transient: true,
            says: "with no entries",
        };
    }
    let Some(answer) = first_answer(response, position) else {
        return Expected::Unanswered;
    };
    match (&answer.value, register) {
        (Some(AnswerValue::Err(wire)), _) => Expected::Exactly(Err(error_from_wire(wire))),
        (Some(AnswerValue::RegisterStream(r)), true) => {
            Expected::Exactly(state_from_wire(&register_request(caller), r.clone()).map(Some))
        }
        (None, false) => Expected::Exactly(Ok(None)),
        // No value for a register, or an answer of the wrong kind.
        _ => Expected::Error {
            code: Code::Internal,
            transient: false,
            says: "resp.value",
        },
    }
}
