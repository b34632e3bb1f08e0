//! What operators touch on the fake server: gRPC health checking and
//! reflection on its gRPC port, its counters as `metrics`, and the state dump.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use coordinator_api::{Code as LocalCode, MessageIndex, PrefixSecret, ProjectName};
use coordinator_grpc::proto::logdog::services_server::Services;
use coordinator_grpc::proto::logdog::{BatchRequest, batch_request};
use coordinator_testkit::{
    CallCounts, FakeServicesServer, StateDump, register_request, terminate_request,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use prost::Message;
use tonic::Request;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

mod common;

use common::{fixture, path};

#[tokio::test]
async fn health_reports_the_services_and_the_server_serving() {
    let f = fixture().await;
    let mut health = HealthClient::new(f.server.channel());
    for service in ["logdog.Services", ""] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.Such".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn health_needs_no_token_and_survives_a_restart() {
    let mut f = fixture().await;
    f.server.set_tokens(["t0ken"]);
    f.server.restart(true).await;
    // logdog.Services now refuses a call without the token...
    let req = register_request(&f.project, &path("pre/+/s"), &f.secret, None);
    let refused = f.client.register_stream(req).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // ...while health checks need none.
    let status = HealthClient::new(f.server.channel())
        .check(HealthCheckRequest {
            service: "logdog.Services".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
}

/// One reflection request on a fresh stream, its one answer.
async fn reflect(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer: ServerReflectionResponse = answers.message().await.unwrap().unwrap();
    answer.message_response.unwrap()
}

#[tokio::test]
async fn reflection_v1_lists_and_describes_logdog_services() {
    let f = fixture().await;
    let mut client = ServerReflectionClient::new(f.server.channel());

    let MessageResponse::ListServicesResponse(list) =
        reflect(&mut client, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a list of services");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"logdog.Services"), "{names:?}");
    assert!(
        names.contains(&"grpc.reflection.v1.ServerReflection"),
        "{names:?}"
    );

    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &mut client,
        MessageRequest::FileContainingSymbol("logdog.Services".to_owned()),
    )
    .await
    else {
        panic!("not a file descriptor");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
        .unwrap();
    assert_eq!(file.name(), "logdog/services/v1/service.proto");
    let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    assert!(
        methods.contains(&"RegisterStream") && methods.contains(&"Batch"),
        "{methods:?}"
    );
}

/// Every counter of the server reaches the `metrics` handles it registered
/// when it was created, with the same numbers as [`CallCounts`].
#[tokio::test]
async fn counters_reach_metrics_with_the_right_numbers() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let server = metrics::with_local_recorder(&recorder, FakeServicesServer::new);
    let project: ProjectName = "proj".parse().unwrap();
    let secret = server.new_prefix(&project, &"pre".parse().unwrap());

    // Two streams registered (one again), one terminated (twice), one refused.
    for p in ["pre/+/a", "pre/+/b", "pre/+/a"] {
        let req = register_request(&project, &path(p), &secret, None);
        Services::register_stream(&server, Request::new(req))
            .await
            .unwrap();
    }
    let wrong = PrefixSecret::from([9; 36]);
    let req = register_request(&project, &path("pre/+/c"), &wrong, None);
    Services::register_stream(&server, Request::new(req))
        .await
        .unwrap_err();
    for _ in 0..2 {
        let req = terminate_request(&project, &path("pre/+/a"), &secret, MessageIndex::from(3));
        Services::terminate_stream(&server, Request::new(req))
            .await
            .unwrap();
    }
    // Faults: one failed call; a batch of three with one failed and one
    // dropped entry (a register already terminated, a terminate, a load).
    server.faults().fail_next(1, LocalCode::Unavailable);
    let req = register_request(&project, &path("pre/+/b"), &secret, None);
    Services::register_stream(&server, Request::new(req))
        .await
        .unwrap_err();
    server
        .faults()
        .fail_next_batch_entries(1, LocalCode::Internal);
    server.faults().drop_next_batch_entries(2);
    let entry = |value| batch_request::Entry { value: Some(value) };
    let batch = BatchRequest {
        req: vec![
            entry(batch_request::entry::Value::TerminateStream(
                terminate_request(&project, &path("pre/+/b"), &secret, MessageIndex::from(1)),
            )),
            entry(batch_request::entry::Value::RegisterStream(
                register_request(
                    &project,
                    &path("pre/+/d"),
                    &secret,
                    Some(MessageIndex::from(0)),
                ),
            )),
            entry(batch_request::entry::Value::LoadStream(Default::default())),
        ],
    };
    Services::batch(&server, Request::new(batch)).await.unwrap();

    let calls = server.calls();
    assert_eq!(
        (
            calls.register,
            calls.terminate,
            calls.batch,
            calls.faults_injected
        ),
        (5, 2, 1, 4)
    );
    let metrics: HashMap<String, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect();
    let counter = |name: &str| match metrics.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?} in {metrics:?}"),
    };
    assert_eq!(
        counter("fake_coordinator_rpcs_total{rpc=RegisterStream}"),
        5
    );
    assert_eq!(
        counter("fake_coordinator_rpcs_total{rpc=TerminateStream}"),
        2
    );
    assert_eq!(counter("fake_coordinator_rpcs_total{rpc=Batch}"), 1);
    assert_eq!(counter("fake_coordinator_rpcs_total{rpc=LoadStream}"), 0);
    assert_eq!(
        counter("fake_coordinator_batch_entries_total{kind=register}"),
        1
    );
    assert_eq!(
        counter("fake_coordinator_batch_entries_total{kind=terminate}"),
        1
    );
    assert_eq!(
        counter("fake_coordinator_batch_entries_total{kind=other}"),
        1
    );
    assert_eq!(
        counter("fake_coordinator_faults_injected_total{kind=call}"),
        1
    );
    assert_eq!(
        counter("fake_coordinator_faults_injected_total{kind=batch_entry}"),
        1
    );
    assert_eq!(
        counter("fake_coordinator_faults_injected_total{kind=dropped_entry}"),
        2
    );
    assert_eq!(
        counter("fake_coordinator_faults_injected_total{kind=empty_batch}"),
        0
    );
    assert_eq!(counter("fake_coordinator_prpc_rpcs_total{}"), 0);
    // a, b, and d (registered terminated, in the batch); `b`'s terminate
    // entry failed.
    assert_eq!(counter("fake_coordinator_streams_registered_total{}"), 3);
    assert_eq!(counter("fake_coordinator_streams_terminated_total{}"), 2);
    assert_eq!(
        metrics.get("fake_coordinator_streams{}"),
        Some(&DebugValue::Gauge(3.0.into()))
    );
    server.clear_state();
    assert_eq!(
        snapshotter
            .snapshot()
            .into_hashmap()
            .into_iter()
            .find(|(k, _)| k.key().name() == "fake_coordinator_streams")
            .map(|(_, (_, _, v))| v),
        Some(DebugValue::Gauge(0.0.into()))
    );
}

#[tokio::test]
async fn the_state_dump_has_every_stream_and_no_secret() {
    let mut f = fixture().await;
    let expired: coordinator_api::StreamName = "old".parse().unwrap();
    f.server
        .register_prefix(&f.project, &expired, &f.secret, Some(Duration::ZERO));
    let before = SystemTime::now() - Duration::from_secs(1);
    for (p, terminal) in [("pre/+/a", None), ("pre/+/b", Some(MessageIndex::from(7)))] {
        let req = register_request(&f.project, &path(p), &f.secret, terminal);
        f.client.register_stream(req).await.unwrap();
    }
    f.server.set_archived(&f.project, &path("pre/+/b"), true);

    let dump = f.server.dump_state();
    assert_eq!(dump.calls, f.server.calls());
    assert_eq!(dump.streams.len(), 2);
    let a = &dump.streams[0];
    assert_eq!(
        (
            a.project.as_str(),
            a.path.as_str(),
            a.prefix.as_str(),
            a.name.as_str()
        ),
        ("proj", "pre/+/a", "pre", "a")
    );
    assert_eq!(
        a.id,
        coordinator_api::StreamId::for_path(&path("pre/+/a")).as_str()
    );
    assert_eq!((a.proto_version.as_str(), a.terminal_index), ("1", None));
    assert_eq!(a.content_type.as_deref(), Some("text/plain"));
    assert_eq!(a.stream_type.as_deref(), Some("TEXT"));
    assert!(a.registered_at >= before && a.registered_at <= dump.taken_at);
    let b = &dump.streams[1];
    assert_eq!(
        (b.terminal_index, b.archived, b.purged),
        (Some(7), true, false)
    );
    assert_eq!(dump.prefixes.len(), 2);
    assert_eq!(
        (dump.prefixes[0].prefix.as_str(), dump.prefixes[0].expired),
        ("old", true)
    );
    assert!(
        dump.prefixes[0]
            .expires_at
            .is_some_and(|at| at <= dump.taken_at)
    );
    assert_eq!(
        (
            dump.prefixes[1].prefix.as_str(),
            dump.prefixes[1].expired,
            dump.prefixes[1].expires_at
        ),
        ("pre", false, None)
    );

    let json = serde_json::to_string_pretty(&dump).unwrap();
    assert!(!json.contains("secret"), "{json}");
    let secret = f.secret.as_bytes();
    assert!(!json.contains(&hex::encode(secret)));
    assert!(!json.contains(&format!("{secret:?}")));
    let back: StateDump = serde_json::from_str(&json).unwrap();
    assert_eq!(back, dump);
    // Times are RFC 3339.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let at = value["streams"][0]["registered_at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.contains('T'), "{at}");
    let _: CallCounts = serde_json::from_value(value["calls"].clone()).unwrap();
}
