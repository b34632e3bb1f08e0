//! What operators touch on the fake server: gRPC health checking and
//! reflection on its gRPC port.

use coordinator_testkit::register_request;
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
