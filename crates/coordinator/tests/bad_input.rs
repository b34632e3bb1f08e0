//! Bad input, end to end.
//!
//! 1. Invalid raw input (project, path, stream name, secret length, stream ID,
//!    terminal index) is rejected by the type constructors with the documented
//!    `coordinator_types::Error` variant and by `RegisterRequest::parse` /
//!    `TerminateRequest::parse` with a permanent `InvalidArgument` naming the
//!    field, and no RPC leaves the client.
//! 2. Input only the server can judge is refused by it with a permanent error,
//!    which the cache keeps (one RPC, however often it is asked).
//! 3. Malformed answers from a scripted server, through the cache and the
//!    batching client over loopback (what `coordinator-grpc`'s own
//!    `tests/malformed.rs` does not cover: batched answers, and the cache's
//!    handling of each outcome), and garbage bytes on the wire: typed errors,
//!    retried and forgotten if transient, kept if permanent, never a panic.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Stack, StackOptions};
use coordinator::types::{self as types, Found, PathPart};
use coordinator::{
    Code, Coordinator, Error, LogStreamState, MessageIndex, PrefixSecret, ProjectName,
    RegisterRequest, StreamId, StreamName, StreamPath, TerminateRequest,
};
use coordinator_grpc::proto::logdog::{
    self as proto, BatchRequest, BatchResponse, InternalLogStreamState, RegisterStreamRequest,
    RegisterStreamResponse, batch_request, batch_response,
};
use coordinator_grpc::proto::logpb::LogStreamDescriptor;
use coordinator_grpc::{BatchOptions, GrpcCoordinator, RetryPolicy};
use coordinator_testkit::{CallCounts, FakeServicesServer, ScriptedServices, descriptor};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tonic::codegen::http;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};

const SECRET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID: &str = "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad";

// ---- 1. Invalid raw input. ----

fn c(ch: char) -> Found {
    Found::Char(ch)
}

/// Invalid project names and the documented error of each.
fn bad_projects() -> Vec<(&'static str, types::Error)> {
    use types::Error::*;
    vec![
        ("", EmptyProject),
        ("Chromium", ProjectStart { found: c('C') }),
        ("1eet", ProjectStart { found: c('1') }),
        ("_name", ProjectStart { found: c('_') }),
        ("-name", ProjectStart { found: c('-') }),
        ("é", ProjectStart { found: c('é') }),
        (
            "foo/bar",
            ProjectCharacter {
                index: 3,
                found: c('/'),
            },
        ),
        (
            "fooBar",
            ProjectCharacter {
                index: 3,
                found: c('B'),
            },
        ),
        (
            "foo bar",
            ProjectCharacter {
                index: 3,
                found: c(' '),
            },
        ),
        (
            "proj.x",
            ProjectCharacter {
                index: 4,
                found: c('.'),
            },
        ),
        (
            "projé",
            ProjectCharacter {
                index: 4,
                found: c('é'),
            },
        ),
        (
            "p\0",
            ProjectCharacter {
                index: 1,
                found: c('\0'),
            },
        ),
    ]
}

/// Invalid stream names (`docs/behaviour.md` §2) and the documented error of each.
fn bad_names() -> Vec<(String, types::Error)> {
    use types::Error::*;
    vec![
        (String::new(), EmptyName),
        (
            "A".repeat(4097),
            NameTooLong {
                len: 4097,
                max: 4096,
            },
        ),
        // Length is checked before any character rule.
        (
            format!("{}^", "A".repeat(4096)),
            NameTooLong {
                len: 4097,
                max: 4096,
            },
        ),
        (
            "/foo/bar".into(),
            InvalidSegmentStart {
                offset: 0,
                found: c('/'),
            },
        ),
        ("foo/bar/".into(), TrailingSeparator),
        (
            "foo//bar".into(),
            InvalidSegmentStart {
                offset: 4,
                found: c('/'),
            },
        ),
        (
            "foo^bar".into(),
            IllegalCharacter {
                index: 3,
                found: c('^'),
            },
        ),
        (
            "_foo/bar".into(),
            InvalidSegmentStart {
                offset: 0,
                found: c('_'),
            },
        ),
        (
            "foo/_bar/baz".into(),
            InvalidSegmentStart {
                offset: 4,
                found: c('_'),
            },
        ),
        (
            "foo bar".into(),
            IllegalCharacter {
                index: 3,
                found: c(' '),
            },
        ),
        (
            "fooé".into(),
            IllegalCharacter {
                index: 3,
                found: c('é'),
            },
        ),
        (
            "foo/.bar".into(),
            InvalidSegmentStart {
                offset: 4,
                found: c('.'),
            },
        ),
    ]
}

/// Invalid full stream paths and the documented error of each: the `docs/behaviour.md` §2
/// vectors, plus every bad name as the prefix and as the name (byte indexes
/// relative to the part).
fn bad_paths() -> Vec<(String, types::Error)> {
    use types::Error::*;
    let part = |part, e: types::Error| InvalidPathPart {
        part,
        source: Box::new(e),
    };
    let mut cases: Vec<(String, types::Error)> = vec![
        (String::new(), MissingPathSeparator),
        ("foo/bar".into(), MissingPathSeparator),
        ("+foo".into(), MissingPathSeparator),
        ("foo/+".into(), part(PathPart::Name, EmptyName)),
        ("a/+/".into(), part(PathPart::Name, EmptyName)),
        ("/+/".into(), part(PathPart::Prefix, EmptyName)),
        ("+/foo".into(), part(PathPart::Prefix, EmptyName)),
        (
            "a/+foo/+/b".into(),
            part(
                PathPart::Prefix,
                InvalidSegmentStart {
                    offset: 2,
                    found: c('+'),
                },
            ),
        ),
        (
            "fo+o/bar+/+/baz".into(),
            part(
                PathPart::Prefix,
                IllegalCharacter {
                    index: 2,
                    found: c('+'),
                },
            ),
        ),
        (
            "a/+/b/+/c".into(),
            part(
                PathPart::Name,
                InvalidSegmentStart {
                    offset: 2,
                    found: c('+'),
                },
            ),
        ),
    ];
    for (name, e) in bad_names() {
        if name.is_empty() || name.ends_with('/') || name.starts_with('/') {
            continue; // These change where the separator is; covered above.
        }
        cases.push((format!("ok/+/{name}"), part(PathPart::Name, e.clone())));
        cases.push((format!("{name}/+/ok"), part(PathPart::Prefix, e)));
    }
    cases
}

fn bad_secrets() -> Vec<(Vec<u8>, types::Error)> {
    [0usize, 1, 35, 37, 64, 1024]
        .into_iter()
        .map(|len| {
            (
                SECRET.iter().copied().cycle().take(len).collect(),
                types::Error::SecretLength {
                    found: len,
                    required: 36,
                },
            )
        })
        .collect()
}

fn bad_ids() -> Vec<(&'static str, types::Error)> {
    use types::Error::*;
    vec![
        ("", EmptyStreamId),
        (
            "ab cd",
            StreamIdCharacter {
                index: 2,
                found: c(' '),
            },
        ),
        (
            "abc\u{7f}",
            StreamIdCharacter {
                index: 3,
                found: c('\u{7f}'),
            },
        ),
        (
            "idé",
            StreamIdCharacter {
                index: 2,
                found: c('é'),
            },
        ),
        (
            "a\nb",
            StreamIdCharacter {
                index: 1,
                found: c('\n'),
            },
        ),
    ]
}

fn bad_indexes() -> Vec<(i64, types::Error)> {
    [-1, -2, -100, i64::MIN]
        .into_iter()
        .map(|value| (value, types::Error::NegativeIndex { value }))
        .collect()
}

#[test]
fn type_constructors_reject_bad_input_with_the_documented_error() {
    for (input, expected) in bad_projects() {
        assert_eq!(
            input.parse::<ProjectName>().unwrap_err(),
            expected,
            "{input:?}"
        );
    }
    for (input, expected) in bad_names() {
        assert_eq!(
            input.parse::<StreamName>().unwrap_err(),
            expected,
            "{input:?}"
        );
        assert_eq!(StreamName::validate_bytes(input.as_bytes()), Err(expected));
    }
    for (input, expected) in bad_paths() {
        assert_eq!(
            input.parse::<StreamPath>().unwrap_err(),
            expected,
            "{input:?}"
        );
    }
    for (input, expected) in bad_secrets() {
        assert_eq!(PrefixSecret::from_bytes(&input).unwrap_err(), expected);
        // The message gives lengths, never bytes.
        let message = expected.to_string();
        assert!(!message.contains("abc"), "{message}");
    }
    for (input, expected) in bad_ids() {
        assert_eq!(
            input.parse::<StreamId>().unwrap_err(),
            expected,
            "{input:?}"
        );
    }
    for (input, expected) in bad_indexes() {
        assert_eq!(MessageIndex::from_wire(input).unwrap_err(), expected);
    }
    for value in [i64::MAX as u64 + 1, u64::MAX] {
        assert_eq!(
            MessageIndex::new(value).unwrap_err(),
            types::Error::IndexTooLarge { value }
        );
    }
    // Non-UTF-8 bytes in a name are named by byte.
    assert_eq!(
        StreamName::validate_bytes(b"ab\xffc"),
        Err(types::Error::IllegalCharacter {
            index: 2,
            found: Found::Byte(0xff)
        })
    );
}

/// One invalid raw request: which parse it goes through, and the field.
struct RawCase {
    what: String,
    field: &'static str,
    problem: types::Error,
    call: RawCall,
}

enum RawCall {
    Register {
        project: String,
        path: String,
        secret: Vec<u8>,
        terminal_index: Option<i64>,
    },
    Terminate {
        project: String,
        path: String,
        id: String,
        secret: Vec<u8>,
        terminal_index: i64,
    },
}

fn register(project: &str, path: &str, secret: &[u8], terminal_index: Option<i64>) -> RawCall {
    RawCall::Register {
        project: project.into(),
        path: path.into(),
        secret: secret.into(),
        terminal_index,
    }
}

fn terminate(project: &str, path: &str, id: &str, secret: &[u8], terminal_index: i64) -> RawCall {
    RawCall::Terminate {
        project: project.into(),
        path: path.into(),
        id: id.into(),
        secret: secret.into(),
        terminal_index,
    }
}

/// Every invalid field, in a register and in a terminate request, the other
/// fields valid.
fn raw_cases() -> Vec<RawCase> {
    let (p, path) = ("proj", "builds/1/+/stdout");
    let mut cases = Vec::new();
    let mut push = |what: String, field, problem: types::Error, call| {
        cases.push(RawCase {
            what,
            field,
            problem,
            call,
        })
    };
    for (project, e) in bad_projects() {
        push(
            format!("register project {project:?}"),
            "project",
            e.clone(),
            register(project, path, SECRET, None),
        );
        push(
            format!("terminate project {project:?}"),
            "project",
            e,
            terminate(project, path, ID, SECRET, 3),
        );
    }
    for (bad, e) in bad_paths() {
        push(
            format!("register path {bad:.40?}"),
            "path",
            e.clone(),
            register(p, &bad, SECRET, None),
        );
        push(
            format!("terminate path {bad:.40?}"),
            "path",
            e,
            terminate(p, &bad, ID, SECRET, 3),
        );
    }
    for (secret, e) in bad_secrets() {
        let n = secret.len();
        push(
            format!("register secret of {n} bytes"),
            "secret",
            e.clone(),
            register(p, path, &secret, Some(4)),
        );
        push(
            format!("terminate secret of {n} bytes"),
            "secret",
            e,
            terminate(p, path, ID, &secret, 3),
        );
    }
    for (id, e) in bad_ids() {
        push(
            format!("terminate id {id:?}"),
            "id",
            e,
            terminate(p, path, id, SECRET, 3),
        );
    }
    for (index, e) in bad_indexes() {
        push(
            format!("register terminal index {index}"),
            "terminal_index",
            e.clone(),
            register(p, path, SECRET, Some(index)),
        );
        push(
            format!("terminate terminal index {index}"),
            "terminal_index",
            e,
            terminate(p, path, ID, SECRET, index),
        );
    }
    cases
}

/// What a collector does with raw input: parse it, and only then call the
/// Coordinator.
async fn call_raw(coordinator: &dyn Coordinator, call: &RawCall) -> Result<(), Error> {
    match call {
        RawCall::Register {
            project,
            path,
            secret,
            terminal_index,
        } => {
            let request = RegisterRequest::parse(project, path, secret, *terminal_index)?;
            let desc = descriptor(&request.path);
            coordinator.register_stream(&request, &desc).await.map(drop)
        }
        RawCall::Terminate {
            project,
            path,
            id,
            secret,
            terminal_index,
        } => {
            let request = TerminateRequest::parse(project, path, id, secret, *terminal_index)?;
            coordinator.terminate_stream(&request).await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_raw_input_is_refused_naming_the_field_and_sends_nothing() {
    let server = FakeServicesServer::start().await;
    let project: ProjectName = "proj".parse().unwrap();
    server.register_prefix(
        &project,
        &"builds/1".parse().unwrap(),
        &PrefixSecret::from(*SECRET),
        None,
    );
    let stack = Stack::build(server.channel(), StackOptions::default());
    let cases = raw_cases();
    assert!(cases.len() > 60, "{}", cases.len());
    for case in &cases {
        let e = call_raw(&*stack.cache, &case.call).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}: {e}", case.what);
        assert!(!e.is_transient(), "{}: {e}", case.what);
        assert_eq!(e.field(), Some(case.field), "{}: {e}", case.what);
        assert_eq!(
            e.message(),
            format!("{}: {}", case.field, case.problem),
            "{}",
            case.what
        );
    }
    // Nothing reached the cache, the channel or the server.
    assert_eq!(stack.cache.stats().misses, 0);
    assert_eq!(stack.observer.snapshot().sent, 0);
    assert_eq!(server.calls(), CallCounts::default());

    // The control: valid input goes all the way (so the counters above count).
    let valid = register("proj", "builds/1/+/stdout", SECRET, None);
    call_raw(&*stack.cache, &valid).await.unwrap();
    assert_eq!(server.calls().batch_register_entries, 1);
    assert_eq!(stack.observer.snapshot().sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_protocol_version_never_leaves_the_client() {
    let server = FakeServicesServer::start().await;
    let mut request = RegisterRequest::parse("proj", "a/+/b", SECRET, None).unwrap();
    request.proto_version = "".into();
    let desc = descriptor(&request.path);

    // Direct, batched, and batched behind the cache.
    let direct = GrpcCoordinator::builder()
        .retry(RetryPolicy::none())
        .build(server.channel())
        .unwrap();
    let stack = Stack::build(server.channel(), StackOptions::default());
    for coordinator in [&direct as &dyn Coordinator, stack.grpc(), &*stack.cache] {
        let e = coordinator
            .register_stream(&request, &desc)
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.field(), e.is_transient()),
            (Code::InvalidArgument, Some("proto_version"), false),
            "{e}"
        );
    }
    // The cache keeps the permanent error: asking again makes no inner call.
    let again = stack
        .cache
        .register_stream(&request, &desc)
        .await
        .unwrap_err();
    assert_eq!(again.field(), Some("proto_version"));
    assert_eq!(stack.cache.stats().register_calls, 1);
    assert_eq!(stack.cache.stats().permanent_failures, 1);
    assert_eq!(stack.observer.snapshot().sent, 0);
    assert_eq!(server.calls(), CallCounts::default());
}

// ---- 2. Input only the server can judge. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusals_are_permanent_and_kept_by_the_cache() {
    let server = FakeServicesServer::start().await;
    let project: ProjectName = "proj".parse().unwrap();
    let secret = PrefixSecret::from(*SECRET);
    server.register_prefix(&project, &"builds/1".parse().unwrap(), &secret, None);
    let stack = Stack::build(server.channel(), StackOptions::default());

    let path = |name: &str| -> StreamPath { format!("builds/1/+/{name}").parse().unwrap() };
    let request = |name: &str| RegisterRequest::new(project.clone(), path(name), secret.clone());
    let undecodable = b"\xff\xff\xff".to_vec();
    let bad_prefix = LogStreamDescriptor {
        prefix: "builds/1^".into(),
        name: "c".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut version_2 = request("a");
    version_2.proto_version = "2".into();

    // (what, register request, descriptor, code, message prefix)
    let registers: Vec<(&str, RegisterRequest, Vec<u8>, Code, &str)> = vec![
        (
            "unknown protocol version",
            version_2,
            descriptor(&path("a")),
            Code::InvalidArgument,
            "proto_version:",
        ),
        (
            "undecodable descriptor",
            request("b"),
            undecodable,
            Code::InvalidArgument,
            "desc:",
        ),
        (
            "invalid descriptor prefix",
            request("c"),
            bad_prefix,
            Code::InvalidArgument,
            "desc.prefix:",
        ),
        (
            "unregistered prefix",
            RegisterRequest::new(
                project.clone(),
                "other/+/x".parse().unwrap(),
                secret.clone(),
            ),
            descriptor(&"other/+/x".parse().unwrap()),
            Code::FailedPrecondition,
            "prefix",
        ),
        (
            "wrong secret",
            RegisterRequest::new(project.clone(), path("d"), PrefixSecret::from([b'z'; 36])),
            descriptor(&path("d")),
            Code::InvalidArgument,
            "secret:",
        ),
    ];
    for (what, request, desc, code, prefix) in &registers {
        let before = server.calls().batch_register_entries;
        for _ in 0..3 {
            let e = stack
                .cache
                .register_stream(request, desc)
                .await
                .unwrap_err();
            assert_eq!(e.code(), *code, "{what}: {e}");
            assert!(!e.is_transient(), "{what}: {e}");
            assert!(e.message().starts_with(prefix), "{what}: {e}");
        }
        assert_eq!(server.calls().batch_register_entries, before + 1, "{what}");
    }

    // Terminations: an ID that is valid client-side (printable) but not a
    // LogDog ID, and an unknown ID.
    let terminations = [
        ("non-hex ID", "abc", Code::InvalidArgument, "id:"),
        ("unknown ID", ID, Code::NotFound, "no stream"),
    ];
    for (i, (what, id, code, prefix)) in terminations.into_iter().enumerate() {
        let request =
            TerminateRequest::parse("proj", path(&format!("t{i}")).as_str(), id, SECRET, 7)
                .unwrap();
        let before = server.calls().batch_terminate_entries;
        for _ in 0..3 {
            let e = stack.cache.terminate_stream(&request).await.unwrap_err();
            assert_eq!(e.code(), code, "{what}: {e}");
            assert!(!e.is_transient(), "{what}: {e}");
            assert!(e.message().starts_with(prefix), "{what}: {e}");
        }
        assert_eq!(server.calls().batch_terminate_entries, before + 1, "{what}");
    }
    assert_eq!(stack.cache.stats().permanent_failures, 7);
    assert!(server.streams().is_empty());
}

// ---- 3. Malformed answers and garbage on the wire. ----

/// How the scripted server answers each batch entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Good,
    /// A RegisterStream answer without `state`.
    MissingState,
    /// A RegisterStream answer whose secret has this length.
    SecretOfLength(usize),
    /// The entry's index with no value.
    NoValue,
    /// A RegisterStream answer (to every entry, terminations included).
    RegisterStreamReply,
    /// Answers only at indexes past the end and negative ones.
    OutOfRange,
    /// A permanent error, then the good answer, at the same index.
    DuplicateErrorFirst,
    /// No entries at all.
    Empty,
}

/// What the scripted server's Batch answers are currently made of.
#[derive(Clone)]
struct Script {
    answer: Arc<Mutex<Answer>>,
}

fn good_register(request: &RegisterStreamRequest) -> RegisterStreamResponse {
    RegisterStreamResponse {
        id: ID.into(),
        state: Some(InternalLogStreamState {
            proto_version: request.proto_version.clone(),
            secret: request.secret.clone(),
            terminal_index: request.terminal_index,
            archived: false,
            purged: false,
        }),
        error: None,
    }
}

impl Script {
    fn answer(&self, request: &BatchRequest) -> BatchResponse {
        use batch_request::entry::Value as Req;
        use batch_response::entry::Value as Resp;
        let answer = *self.answer.lock().unwrap();
        let n = request.req.len() as i32;
        let mut resp = Vec::new();
        let mut push = |index: i32, value| resp.push(batch_response::Entry { index, value });
        for (i, entry) in request.req.iter().enumerate() {
            let i = i as i32;
            let good = match &entry.value {
                Some(Req::RegisterStream(r)) => Some(Resp::RegisterStream(good_register(r))),
                _ => None,
            };
            let register = matches!(entry.value, Some(Req::RegisterStream(_)));
            let with_state = |f: &dyn Fn(&mut RegisterStreamResponse)| match &entry.value {
                Some(Req::RegisterStream(r)) => {
                    let mut response = good_register(r);
                    f(&mut response);
                    Some(Resp::RegisterStream(response))
                }
                _ => None,
            };
            match answer {
                Answer::Good => push(i, good),
                Answer::MissingState => push(i, with_state(&|r| r.state = None)),
                Answer::SecretOfLength(len) => push(
                    i,
                    with_state(&|r| {
                        r.state.as_mut().unwrap().secret = SECRET.repeat(2)[..len].to_vec()
                    }),
                ),
                Answer::NoValue => push(i, None),
                Answer::RegisterStreamReply if register => push(i, good),
                Answer::RegisterStreamReply => push(
                    i,
                    Some(Resp::RegisterStream(good_register(
                        &RegisterStreamRequest {
                            secret: SECRET.to_vec(),
                            proto_version: "1".into(),
                            ..Default::default()
                        },
                    ))),
                ),
                // One answer per entry (more would be malformed as a whole),
                // past either end.
                Answer::OutOfRange if i % 2 == 0 => push(n + i, good),
                Answer::OutOfRange => push(-1 - i, good),
                Answer::DuplicateErrorFirst => {
                    push(
                        i,
                        Some(Resp::Err(proto::Error {
                            grpc_code: Code::NotFound.as_i32(),
                            transient: false,
                            msg: "scripted: not found".into(),
                        })),
                    );
                    push(i, good);
                }
                Answer::Empty => {}
            }
        }
        BatchResponse { resp }
    }
}

/// Serves `router` on a free loopback port; returns a lazy channel to it.
async fn serve(router: tonic::transport::server::Router) -> Channel {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))));
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// Quick retries (1), short batching delay, 2 re-queues.
fn quick_options() -> StackOptions {
    StackOptions {
        retry: common::fast_retry(1),
        attempt_timeout: Duration::from_secs(10),
        batch: BatchOptions::default()
            .with_max_delay(Duration::from_millis(1))
            .with_max_requeues(2),
        cache_size: 1024,
    }
}

enum Op {
    Register,
    Terminate,
}

struct Expect {
    code: Code,
    transient: bool,
    message: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batch_answers_through_the_cache_are_typed_errors() {
    let script = Script {
        answer: Arc::new(Mutex::new(Answer::Good)),
    };
    let server = {
        let script = script.clone();
        ScriptedServices::new(good_register, move |request| script.answer(request))
    };
    let channel = Endpoint::from_shared(server.clone().serve().await.unwrap())
        .unwrap()
        .connect_lazy();
    let options = quick_options();
    let (retries, requeues) = (
        u64::from(options.retry.max_retries),
        u64::from(options.batch.max_requeues),
    );
    // A malformed answer is not the server's verdict: transient, retried,
    // never kept.
    let malformed = |message| Expect {
        code: Code::Internal,
        transient: true,
        message,
    };
    let cases = [
        (
            Answer::MissingState,
            Op::Register,
            malformed("missing stream state"),
            retries + 1,
        ),
        (
            Answer::SecretOfLength(35),
            Op::Register,
            malformed("state.secret: prefix secret is 35 bytes"),
            retries + 1,
        ),
        (
            Answer::SecretOfLength(0),
            Op::Register,
            malformed("state.secret: prefix secret is 0 bytes"),
            retries + 1,
        ),
        (
            Answer::SecretOfLength(72),
            Op::Register,
            malformed("state.secret: prefix secret is 72 bytes"),
            retries + 1,
        ),
        (
            Answer::NoValue,
            Op::Register,
            malformed("no answer for a RegisterStream entry"),
            retries + 1,
        ),
        (
            Answer::RegisterStreamReply,
            Op::Terminate,
            malformed("a RegisterStream answer for a TerminateStream entry"),
            retries + 1,
        ),
        // More answers than entries: malformed as a whole, whatever they say.
        (
            Answer::DuplicateErrorFirst,
            Op::Register,
            malformed("2 answers for a batch of 1 entries"),
            retries + 1,
        ),
        // Never answered: re-queued, then a transient error, retried.
        (
            Answer::OutOfRange,
            Op::Register,
            Expect {
                code: Code::Unavailable,
                transient: true,
                message: "unanswered in 3 batches",
            },
            (retries + 1) * (requeues + 1),
        ),
        (
            Answer::OutOfRange,
            Op::Terminate,
            Expect {
                code: Code::Unavailable,
                transient: true,
                message: "unanswered in 3 batches",
            },
            (retries + 1) * (requeues + 1),
        ),
        (
            Answer::Empty,
            Op::Register,
            Expect {
                code: Code::Internal,
                transient: true,
                message: "with no entries",
            },
            retries + 1,
        ),
    ];
    let request = RegisterRequest::parse("proj", "a/+/b", SECRET, None).unwrap();
    let desc = descriptor(&request.path);
    let state = LogStreamState::from_request(&request, ID.parse().unwrap());
    let termination = TerminateRequest::for_state(&state, MessageIndex::from(9));
    for (answer, op, expect, batches) in cases {
        let what = format!("{answer:?}");
        // A fresh cache and batching client per case.
        let stack = Stack::build(channel.clone(), options);
        *script.answer.lock().unwrap() = answer;
        let call = || async {
            match op {
                Op::Register => stack.cache.register_stream(&request, &desc).await.map(drop),
                Op::Terminate => stack.cache.terminate_stream(&termination).await,
            }
        };
        let before = server.batches();
        let e = call().await.unwrap_err();
        assert_eq!(e.code(), expect.code, "{what}: {e}");
        assert_eq!(e.is_transient(), expect.transient, "{what}: {e}");
        assert!(e.message().contains(expect.message), "{what}: {e}");
        assert_eq!(server.batches() - before, batches, "{what}");

        let again = call().await;
        if expect.transient {
            // Forgotten: the next call tries again (and the same again)...
            assert_eq!(again.unwrap_err(), e, "{what}");
            assert_eq!(server.batches() - before, 2 * batches, "{what}");
            // ... and succeeds once the server answers properly.
            *script.answer.lock().unwrap() = Answer::Good;
            call()
                .await
                .unwrap_or_else(|e| panic!("{what}: no recovery: {e}"));
            assert_eq!(stack.cache.stats().transient_failures, 2, "{what}");
        } else {
            // Kept: the same error, no new RPC.
            assert_eq!(again.unwrap_err(), e, "{what}");
            assert_eq!(server.batches() - before, batches, "{what}");
            assert_eq!(stack.cache.stats().permanent_failures, 1, "{what}");
        }
    }
}

/// A `logdog.Services` endpoint that answers every call with the same raw HTTP
/// response, whatever the call.
#[derive(Clone)]
struct RawHttpServer {
    response: Arc<Mutex<RawResponse>>,
    calls: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawResponse {
    /// A gRPC frame whose bytes are not a valid protobuf message.
    UndecodableMessage,
    /// A frame with the compressed flag set and no `grpc-encoding`.
    CompressedFlag,
    /// A frame header announcing 100 bytes, then 3 bytes and the end.
    TruncatedFrame,
    /// An HTML page with HTTP 200.
    Html,
    /// HTTP 502 with a text body, no gRPC status.
    BadGateway,
    /// HTTP 503 with no body and no gRPC status.
    ServiceUnavailable,
    /// A `grpc-status` header that is not a number.
    StatusNotANumber,
    /// A `grpc-status` outside the 17 canonical codes.
    StatusOutOfRange,
}

impl tonic::server::NamedService for RawHttpServer {
    const NAME: &'static str = "logdog.Services";
}

fn frame(compressed: bool, payload: &[u8], announced: Option<u32>) -> String {
    let len = announced.unwrap_or(payload.len() as u32);
    let mut bytes = vec![u8::from(compressed)];
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(payload);
    // Every byte is below 0x80, so this is valid UTF-8 (a `String` body).
    String::from_utf8(bytes).unwrap()
}

impl RawHttpServer {
    fn response(&self) -> http::Response<tonic::body::Body> {
        let kind = *self.response.lock().unwrap();
        let grpc = |body: String| {
            http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(tonic::body::Body::new(body))
                .unwrap()
        };
        // Field 0 with wire type 7: no valid protobuf message starts so.
        let garbage = [0x07, 0x01, 0x02, 0x7f];
        match kind {
            RawResponse::UndecodableMessage => grpc(frame(false, &garbage, None)),
            RawResponse::CompressedFlag => grpc(frame(true, &[], None)),
            RawResponse::TruncatedFrame => grpc(frame(false, &garbage[..3], Some(100))),
            RawResponse::Html => http::Response::builder()
                .status(200)
                .header("content-type", "text/html")
                .body(tonic::body::Body::new(
                    "<html><body>hello</body></html>".to_string(),
                ))
                .unwrap(),
            RawResponse::BadGateway => http::Response::builder()
                .status(502)
                .header("content-type", "text/plain")
                .body(tonic::body::Body::new("bad gateway".to_string()))
                .unwrap(),
            RawResponse::ServiceUnavailable => http::Response::builder()
                .status(503)
                .body(tonic::body::Body::empty())
                .unwrap(),
            RawResponse::StatusNotANumber => http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", "banana")
                .body(tonic::body::Body::empty())
                .unwrap(),
            RawResponse::StatusOutOfRange => http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", "99")
                .header("grpc-message", "odd")
                .body(tonic::body::Body::empty())
                .unwrap(),
        }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for RawHttpServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(self.response()))
    }
}

/// Calls `coordinator` twice for one stream through a fresh cache and returns
/// both errors and how many calls `calls` counted for each.
async fn twice_through_a_cache(grpc: GrpcCoordinator, calls: &AtomicU64) -> [(Error, u64); 2] {
    let cache = coordinator_cache::CachedCoordinator::new(grpc, 16, Duration::from_secs(60));
    let request = RegisterRequest::parse("proj", "a/+/b", SECRET, None).unwrap();
    let desc = descriptor(&request.path);
    let mut out = Vec::new();
    for _ in 0..2 {
        let before = calls.load(Ordering::SeqCst);
        let e = cache.register_stream(&request, &desc).await.unwrap_err();
        out.push((e, calls.load(Ordering::SeqCst) - before));
    }
    out.try_into().unwrap()
}

fn coordinators(channel: Channel, retries: u32) -> [(&'static str, GrpcCoordinator); 2] {
    let builder = GrpcCoordinator::builder()
        .retry(common::fast_retry(retries))
        .attempt_timeout(Duration::from_secs(10));
    [
        ("direct", builder.clone().build(channel.clone()).unwrap()),
        (
            "batched",
            builder
                .batching(BatchOptions::default().with_max_delay(Duration::from_millis(1)))
                .build(channel)
                .unwrap(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_http_answers_are_typed_errors() {
    let server = RawHttpServer {
        response: Arc::new(Mutex::new(RawResponse::Html)),
        calls: Arc::new(AtomicU64::new(0)),
    };
    let channel = serve(tonic::transport::Server::builder().add_service(server.clone())).await;
    let retries = 1u32;
    // (answer, expected code, expected message part). A body that is not
    // gRPC frames fails tonic's decoding: `Internal`, kept as the server's
    // status (transient by the code table); an HTTP error status without a body
    // maps per gRPC's HTTP-to-gRPC table.
    let cases = [
        (
            RawResponse::UndecodableMessage,
            Code::Internal,
            "failed to decode Protobuf message",
        ),
        (
            RawResponse::CompressedFlag,
            Code::Internal,
            "compressed-flag",
        ),
        (
            RawResponse::TruncatedFrame,
            Code::Internal,
            "Unexpected EOF",
        ),
        (
            RawResponse::Html,
            Code::Internal,
            "invalid compression flag: 60",
        ),
        (RawResponse::BadGateway, Code::Internal, "502 Bad Gateway"),
        (RawResponse::ServiceUnavailable, Code::Unavailable, ""),
        (RawResponse::StatusNotANumber, Code::Unknown, ""),
        (RawResponse::StatusOutOfRange, Code::Unknown, ""),
    ];
    for (answer, code, part) in cases {
        *server.response.lock().unwrap() = answer;
        for (mode, grpc) in coordinators(channel.clone(), retries) {
            let what = format!("{answer:?}, {mode}");
            let [(first, n1), (second, n2)] = twice_through_a_cache(grpc, &server.calls).await;
            println!("{what}: {first:?}");
            assert_eq!(first.code(), code, "{what}: {first}");
            assert!(first.message().contains(part), "{what}: {first}");
            // Transient (every one of these codes is), so retried per the
            // policy and not kept by the cache.
            assert!(first.is_transient(), "{what}: {first}");
            assert_eq!(n1, u64::from(retries) + 1, "{what}");
            assert_eq!((second.code(), n2), (code, n1), "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_instead_of_http2_are_a_transient_unavailable_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        while let Ok((mut socket, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let garbage = garbage.clone();
            tokio::spawn(async move {
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n\xff\xfe\0\0").await;
                let _ = socket.write_all(&garbage).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let retries = 2u32;
    for (mode, grpc) in coordinators(channel, retries) {
        let [(first, n1), (second, n2)] = twice_through_a_cache(grpc, &connections).await;
        println!("{mode}: {first:?}");
        assert_eq!(first.code(), Code::Unavailable, "{mode}: {first}");
        assert!(first.is_transient(), "{mode}: {first}");
        // Each attempt needed a new connection (the last one was garbage).
        assert_eq!(n1, u64::from(retries) + 1, "{mode}");
        assert_eq!((second.code(), n2), (Code::Unavailable, n1), "{mode}");
    }
}
