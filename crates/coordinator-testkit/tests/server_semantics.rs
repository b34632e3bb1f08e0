//! The fake server's semantics (spec §6) through a real tonic client over
//! loopback: every status code path of RegisterStream, TerminateStream and
//! LoadStream, idempotency, pre-termination, and the unimplemented RPCs.

use std::time::Duration;

use coordinator_api::{MessageIndex, PrefixSecret, ProjectName, StreamId, StreamName, StreamPath};
use coordinator_grpc::proto::logdog::services_client::ServicesClient;
use coordinator_grpc::proto::logdog::{
    ArchiveStreamRequest, DeleteRequest, LeaseRequest, LoadStreamRequest, RegisterStreamRequest,
    RegisterStreamResponse, TerminateStreamRequest,
};
use coordinator_grpc::proto::logpb::LogStreamDescriptor;
use coordinator_testkit::{
    FakeServer, FakeServicesServer, descriptor, descriptor_message, register_request,
    terminate_request,
};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

fn project(s: &str) -> ProjectName {
    s.parse().unwrap()
}

fn name(s: &str) -> StreamName {
    s.parse().unwrap()
}

fn path(s: &str) -> StreamPath {
    s.parse().unwrap()
}

/// A server with prefix `testing` registered in project `proj`.
struct Fixture {
    server: FakeServer,
    client: ServicesClient<Channel>,
    project: ProjectName,
    secret: PrefixSecret,
}

async fn fixture() -> Fixture {
    let server = FakeServicesServer::start().await;
    let project = project("proj");
    let secret = server.new_prefix(&project, &name("testing"));
    Fixture {
        client: server.client(),
        server,
        project,
        secret,
    }
}

impl Fixture {
    fn register_req(&self, p: &str, terminal_index: Option<u32>) -> RegisterStreamRequest {
        register_request(
            &self.project,
            &path(p),
            &self.secret,
            terminal_index.map(MessageIndex::from),
        )
    }

    fn terminate_req(&self, p: &str, index: u32) -> TerminateStreamRequest {
        terminate_request(
            &self.project,
            &path(p),
            &self.secret,
            MessageIndex::from(index),
        )
    }

    async fn register(
        &mut self,
        req: RegisterStreamRequest,
    ) -> Result<RegisterStreamResponse, tonic::Status> {
        self.client
            .register_stream(req)
            .await
            .map(|r| r.into_inner())
    }

    async fn terminate(&mut self, req: TerminateStreamRequest) -> Result<(), tonic::Status> {
        self.client
            .terminate_stream(req)
            .await
            .map(|r| r.into_inner())
    }
}

/// Asserts `result` failed with `code`, and that the message does not leak the
/// fixture's secret.
#[track_caller]
fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    secret: &PrefixSecret,
) -> tonic::Status {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    let msg = status.message();
    assert!(!msg.is_empty());
    assert!(!msg.contains(&hex_of(secret)), "secret leaked: {msg}");
    assert!(
        !msg.as_bytes()
            .windows(8)
            .any(|w| secret.as_bytes().windows(8).any(|s| s == w)),
        "secret bytes leaked: {msg}"
    );
    status
}

fn hex_of(secret: &PrefixSecret) -> String {
    secret
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn register_creates_the_stream_with_its_sha256_id_and_answers_its_state() {
    let mut f = fixture().await;
    let resp = f
        .register(f.register_req("testing/+/foo/bar", None))
        .await
        .unwrap();
    assert_eq!(
        resp.id,
        "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad"
    );
    assert!(resp.error.is_none());
    let state = resp.state.unwrap();
    assert_eq!(state.proto_version, "1");
    assert_eq!(state.secret, f.secret.as_bytes());
    assert_eq!(state.terminal_index, -1);
    assert!(!state.archived && !state.purged);

    let stored = f
        .server
        .stream(&f.project, &path("testing/+/foo/bar"))
        .unwrap();
    assert_eq!(stored.id.as_str(), resp.id);
    assert_eq!(stored.path.as_str(), "testing/+/foo/bar");
    assert_eq!(stored.secret, f.secret);
    assert_eq!(stored.terminal_index, None);
    assert_eq!(stored.registrations, 1);
    assert_eq!(stored.descriptor, descriptor(&path("testing/+/foo/bar")));
    assert_eq!(f.server.streams().len(), 1);
    assert_eq!(f.server.calls().register, 1);
}

#[tokio::test]
async fn registration_is_idempotent_and_answers_the_stored_state() {
    let mut f = fixture().await;
    let first = f
        .register(f.register_req("testing/+/s", None))
        .await
        .unwrap();

    // A later request that says something else (terminated, other descriptor
    // details) gets the stored state back, unchanged.
    let mut again = f.register_req("testing/+/s", Some(9));
    again.desc = LogStreamDescriptor {
        content_type: "application/other".into(),
        ..descriptor_message(&path("testing/+/s"))
    }
    .encode_to_vec();
    let second = f.register(again).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(second.state.unwrap().terminal_index, -1);

    let stored = f.server.stream(&f.project, &path("testing/+/s")).unwrap();
    assert_eq!(stored.registrations, 2);
    assert_eq!(stored.terminal_index, None);
    assert_eq!(stored.descriptor, descriptor(&path("testing/+/s")));
}

#[tokio::test]
async fn registration_with_a_terminal_index_creates_the_stream_terminated() {
    let mut f = fixture().await;
    let resp = f
        .register(f.register_req("testing/+/done", Some(0)))
        .await
        .unwrap();
    assert_eq!(resp.state.unwrap().terminal_index, 0);
    let stored = f
        .server
        .stream(&f.project, &path("testing/+/done"))
        .unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::ZERO));

    // Terminating at the same index is idempotent; another index conflicts.
    f.terminate(f.terminate_req("testing/+/done", 0))
        .await
        .unwrap();
    assert_code(
        f.terminate(f.terminate_req("testing/+/done", 1)).await,
        Code::FailedPrecondition,
        &f.secret,
    );
}

#[tokio::test]
async fn registration_status_codes() {
    let mut f = fixture().await;
    let other_project = project("other");
    let other_secret = f.server.new_prefix(&other_project, &name("elsewhere"));
    f.server.register_prefix(
        &f.project,
        &name("expired"),
        &f.secret,
        Some(Duration::ZERO),
    );

    let base = || f.register_req("testing/+/s", None);
    let with_desc = |prefix: &str, name: &str| RegisterStreamRequest {
        desc: LogStreamDescriptor {
            prefix: prefix.into(),
            name: name.into(),
            ..descriptor_message(&path("testing/+/s"))
        }
        .encode_to_vec(),
        ..base()
    };
    let cases: Vec<(&str, RegisterStreamRequest, Code)> = vec![
        (
            "invalid project",
            RegisterStreamRequest {
                project: "Proj".into(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "empty project",
            RegisterStreamRequest {
                project: String::new(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "proto version 2",
            RegisterStreamRequest {
                proto_version: "2".into(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "empty proto version",
            RegisterStreamRequest {
                proto_version: String::new(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "undecodable descriptor",
            RegisterStreamRequest {
                desc: vec![0xff, 0xff, 0xff],
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "invalid descriptor prefix",
            with_desc("_testing", "s"),
            Code::InvalidArgument,
        ),
        (
            "invalid descriptor name",
            with_desc("testing", "a//b"),
            Code::InvalidArgument,
        ),
        (
            "empty descriptor name",
            with_desc("testing", ""),
            Code::InvalidArgument,
        ),
        (
            "short secret",
            RegisterStreamRequest {
                secret: f.secret.as_bytes()[..35].to_vec(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "unregistered prefix",
            with_desc("unknown", "s"),
            Code::FailedPrecondition,
        ),
        (
            "prefix of another project",
            with_desc("elsewhere", "s"),
            Code::FailedPrecondition,
        ),
        (
            "expired prefix",
            with_desc("expired", "s"),
            Code::FailedPrecondition,
        ),
        (
            "wrong secret",
            RegisterStreamRequest {
                secret: vec![0; 36],
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "another prefix's secret",
            RegisterStreamRequest {
                secret: other_secret.as_bytes().to_vec(),
                ..base()
            },
            Code::InvalidArgument,
        ),
    ];
    let n = cases.len() as u64;
    for (what, req, code) in cases {
        let status = f.client.register_stream(req).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(!status.message().contains(&hex_of(&f.secret)), "{what}");
        assert!(!status.message().contains(&hex_of(&other_secret)), "{what}");
    }
    assert!(
        f.server.streams().is_empty(),
        "no failed registration stores a stream"
    );
    assert_eq!(f.server.calls().register, n);
}

#[tokio::test]
async fn registration_errors_name_the_problem() {
    let mut f = fixture().await;
    let short = f
        .register(RegisterStreamRequest {
            secret: vec![1; 35],
            ..f.register_req("testing/+/s", None)
        })
        .await;
    let status = assert_code(short, Code::InvalidArgument, &f.secret);
    assert!(status.message().starts_with("secret:"), "{status:?}");
    assert!(status.message().contains("35 bytes"), "{status:?}");

    let version = f
        .register(RegisterStreamRequest {
            proto_version: "7".into(),
            ..f.register_req("testing/+/s", None)
        })
        .await;
    assert!(
        assert_code(version, Code::InvalidArgument, &f.secret)
            .message()
            .starts_with("proto_version:")
    );

    let unknown = f
        .register(register_request(
            &f.project,
            &path("nope/+/s"),
            &f.secret,
            None,
        ))
        .await;
    assert!(
        assert_code(unknown, Code::FailedPrecondition, &f.secret)
            .message()
            .contains("not registered")
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_even_for_an_existing_stream() {
    let mut f = fixture().await;
    f.register(f.register_req("testing/+/s", None))
        .await
        .unwrap();
    let wrong = PrefixSecret::from([0x42; 36]);
    let result = f
        .register(register_request(
            &f.project,
            &path("testing/+/s"),
            &wrong,
            None,
        ))
        .await;
    assert_code(result, Code::InvalidArgument, &wrong);
    assert_eq!(
        f.server
            .stream(&f.project, &path("testing/+/s"))
            .unwrap()
            .registrations,
        1
    );
}

#[tokio::test]
async fn reregistering_a_prefix_replaces_its_secret_but_not_its_streams() {
    let mut f = fixture().await;
    f.register(f.register_req("testing/+/old", None))
        .await
        .unwrap();
    let new_secret = PrefixSecret::from([9; 36]);
    f.server
        .register_prefix(&f.project, &name("testing"), &new_secret, None);

    assert_code(
        f.register(f.register_req("testing/+/new", None)).await,
        Code::InvalidArgument,
        &f.secret,
    );
    let resp = f
        .register(register_request(
            &f.project,
            &path("testing/+/old"),
            &new_secret,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        resp.state.unwrap().secret,
        f.secret.as_bytes(),
        "stored secret kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_prefix_expires_after_its_expiry_time() {
    let server = FakeServicesServer::start().await;
    let mut client = server.client();
    let project = project("proj");
    let secret = PrefixSecret::from([5; 36]);
    server.register_prefix(&project, &name("p"), &secret, Some(Duration::from_secs(60)));

    client
        .register_stream(register_request(&project, &path("p/+/a"), &secret, None))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(59)).await;
    client
        .register_stream(register_request(&project, &path("p/+/b"), &secret, None))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    for p in ["p/+/c", "p/+/a"] {
        let status = client
            .register_stream(register_request(&project, &path(p), &secret, None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{p}: {status:?}");
        assert!(status.message().contains("expired"), "{status:?}");
    }
    assert_eq!(server.streams().len(), 2);
}

#[tokio::test]
async fn terminate_records_the_index_and_is_idempotent() {
    let mut f = fixture().await;
    f.register(f.register_req("testing/+/s", None))
        .await
        .unwrap();

    f.terminate(f.terminate_req("testing/+/s", 7))
        .await
        .unwrap();
    f.terminate(f.terminate_req("testing/+/s", 7))
        .await
        .unwrap();
    // The ID is accepted in either case.
    let mut upper = f.terminate_req("testing/+/s", 7);
    upper.id = upper.id.to_uppercase();
    f.terminate(upper).await.unwrap();

    let stored = f.server.stream(&f.project, &path("testing/+/s")).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(7)));
    assert_eq!(stored.terminations, 3);

    let status = assert_code(
        f.terminate(f.terminate_req("testing/+/s", 8)).await,
        Code::FailedPrecondition,
        &f.secret,
    );
    assert!(status.message().contains("7"), "{status:?}");
    assert_eq!(
        f.server
            .stream(&f.project, &path("testing/+/s"))
            .unwrap()
            .terminal_index,
        Some(MessageIndex::from(7))
    );

    // The stored state now carries the index.
    let state = f
        .register(f.register_req("testing/+/s", None))
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.terminal_index, 7);
}

#[tokio::test]
async fn terminate_status_codes() {
    let mut f = fixture().await;
    f.register(f.register_req("testing/+/s", None))
        .await
        .unwrap();
    let other = project("other");
    f.server.new_prefix(&other, &name("testing"));

    let base = || f.terminate_req("testing/+/s", 3);
    let unknown_id = StreamId::for_path(&path("testing/+/never"))
        .as_str()
        .to_owned();
    let cases: Vec<(&str, TerminateStreamRequest, Code)> = vec![
        (
            "invalid project",
            TerminateStreamRequest {
                project: "1p".into(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "index -1",
            TerminateStreamRequest {
                terminal_index: -1,
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "index i64::MIN",
            TerminateStreamRequest {
                terminal_index: i64::MIN,
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "empty id",
            TerminateStreamRequest {
                id: String::new(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "short id",
            TerminateStreamRequest {
                id: "abc123".into(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "65-char id",
            TerminateStreamRequest {
                id: format!("{}0", base().id),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "non-hex id",
            TerminateStreamRequest {
                id: format!("{}z", &base().id[..63]),
                ..base()
            },
            Code::InvalidArgument,
        ),
        // A negative index is refused before the ID is looked up.
        (
            "negative index, unknown id",
            TerminateStreamRequest {
                terminal_index: -5,
                id: unknown_id.clone(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "unknown id",
            TerminateStreamRequest {
                id: unknown_id.clone(),
                ..base()
            },
            Code::NotFound,
        ),
        // The lookup comes before the secret check.
        (
            "unknown id, wrong secret",
            TerminateStreamRequest {
                id: unknown_id,
                secret: vec![0; 36],
                ..base()
            },
            Code::NotFound,
        ),
        (
            "stream of another project",
            TerminateStreamRequest {
                project: "other".into(),
                ..base()
            },
            Code::NotFound,
        ),
        (
            "wrong secret",
            TerminateStreamRequest {
                secret: vec![0; 36],
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "short secret",
            TerminateStreamRequest {
                secret: f.secret.as_bytes()[..20].to_vec(),
                ..base()
            },
            Code::InvalidArgument,
        ),
        (
            "no secret",
            TerminateStreamRequest {
                secret: Vec::new(),
                ..base()
            },
            Code::InvalidArgument,
        ),
    ];
    for (what, req, code) in cases {
        let status = f.client.terminate_stream(req).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(!status.message().contains(&hex_of(&f.secret)), "{what}");
    }
    let stored = f.server.stream(&f.project, &path("testing/+/s")).unwrap();
    assert_eq!(
        stored.terminal_index, None,
        "no failed terminate changed the stream"
    );
    assert_eq!(stored.terminations, 0);
}

#[tokio::test]
async fn load_stream_returns_the_stored_state() {
    let mut f = fixture().await;
    let reg = f
        .register(f.register_req("testing/+/s", None))
        .await
        .unwrap();
    f.terminate(f.terminate_req("testing/+/s", 4))
        .await
        .unwrap();
    assert!(
        f.server
            .set_archived(&f.project, &path("testing/+/s"), true)
    );
    assert!(
        !f.server
            .set_purged(&f.project, &path("testing/+/none"), true)
    );

    let loaded = f
        .client
        .load_stream(LoadStreamRequest {
            project: "proj".into(),
            id: reg.id.clone(),
            desc: true,
        })
        .await
        .unwrap()
        .into_inner();
    let state = loaded.state.unwrap();
    assert_eq!(state.terminal_index, 4);
    assert!(state.archived && !state.purged);
    assert_eq!(state.secret, f.secret.as_bytes());
    assert_eq!(loaded.desc, descriptor(&path("testing/+/s")));
    assert!(loaded.age.is_some());

    let without_desc = f
        .client
        .load_stream(LoadStreamRequest {
            project: "proj".into(),
            id: reg.id.clone(),
            desc: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(without_desc.desc.is_empty());

    // Registration answers the same flags.
    let state = f
        .register(f.register_req("testing/+/s", None))
        .await
        .unwrap()
        .state
        .unwrap();
    assert!(state.archived);

    let missing = f
        .client
        .load_stream(LoadStreamRequest {
            project: "proj".into(),
            id: StreamId::for_path(&path("testing/+/x")).as_str().into(),
            desc: false,
        })
        .await;
    assert_code(missing, Code::NotFound, &f.secret);
    let bad = f
        .client
        .load_stream(LoadStreamRequest {
            project: "proj".into(),
            id: "xyz".into(),
            desc: false,
        })
        .await;
    assert_code(bad, Code::InvalidArgument, &f.secret);
    assert_eq!(f.server.calls().load, 4);
}

#[tokio::test]
async fn the_archival_rpcs_are_unimplemented() {
    let f = fixture().await;
    let mut client = f.client.clone();
    let archive = client.archive_stream(ArchiveStreamRequest::default()).await;
    assert_eq!(archive.unwrap_err().code(), Code::Unimplemented);
    let lease = client.lease_archive_tasks(LeaseRequest::default()).await;
    assert_eq!(lease.unwrap_err().code(), Code::Unimplemented);
    let delete = client.delete_archive_tasks(DeleteRequest::default()).await;
    assert_eq!(delete.unwrap_err().code(), Code::Unimplemented);
    let calls = f.server.calls();
    assert_eq!((calls.archive, calls.lease, calls.delete), (1, 1, 1));
    assert_eq!(calls.total_rpcs(), 3);
}

#[tokio::test]
async fn descriptor_helper_round_trips_prefix_and_name() {
    let desc = LogStreamDescriptor::decode(descriptor(&path("a/b/+/c/d")).as_slice()).unwrap();
    assert_eq!((desc.prefix.as_str(), desc.name.as_str()), ("a/b", "c/d"));
}

#[tokio::test]
async fn the_server_is_reachable_by_address_and_endpoint() {
    let f = fixture().await;
    assert!(f.server.addr().ip().is_loopback());
    assert_ne!(f.server.addr().port(), 0);
    assert_eq!(f.server.endpoint(), format!("http://{}", f.server.addr()));
    let mut client = ServicesClient::connect(f.server.endpoint()).await.unwrap();
    client
        .register_stream(f.register_req("testing/+/s", None))
        .await
        .unwrap();
    assert_eq!(f.server.streams().len(), 1);
}
