//! What operators touch on the fake server: gRPC health checking and
//! reflection on its gRPC port, and the state dump.

use std::time::{Duration, SystemTime};

use coordinator_api::MessageIndex;
use coordinator_testkit::{CallCounts, StateDump, register_request};
use prost::Message;
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
