//! The fake server validates RegisterStream like the real Coordinator (spec
//! §6): `proto_version`, then the descriptor bytes decode, then the descriptor
//! validates, then the prefix exists, has not expired, and the secret matches.
//! One test per rule, and tests of the order between them.

use std::time::Duration;

use coordinator_api::{PrefixSecret, ProjectName, StreamPath};
use coordinator_grpc::proto::logdog::RegisterStreamRequest;
use coordinator_grpc::proto::logpb::LogStreamDescriptor;
use coordinator_testkit::{FakeServer, FakeServicesServer, descriptor_message, register_request};
use prost::Message;
use tonic::Code;

fn path(s: &str) -> StreamPath {
    s.parse().unwrap()
}

struct Fixture {
    server: FakeServer,
    project: ProjectName,
    secret: PrefixSecret,
}

/// Prefix `live` (never expires) and `gone` (already expired), one secret.
async fn fixture() -> Fixture {
    let server = FakeServicesServer::start().await;
    let project: ProjectName = "proj".parse().unwrap();
    let secret = server.new_prefix(&project, &"live".parse().unwrap());
    server.register_prefix(
        &project,
        &"gone".parse().unwrap(),
        &secret,
        Some(Duration::ZERO),
    );
    Fixture {
        server,
        project,
        secret,
    }
}

impl Fixture {
    fn request(&self, desc: LogStreamDescriptor) -> RegisterStreamRequest {
        RegisterStreamRequest {
            desc: desc.encode_to_vec(),
            ..register_request(&self.project, &path("live/+/s"), &self.secret, None)
        }
    }

    /// The code and message of a RegisterStream that must fail.
    async fn refused(&self, req: RegisterStreamRequest) -> (Code, String) {
        let status = self
            .server
            .client()
            .register_stream(req)
            .await
            .expect_err("the registration must fail");
        (status.code(), status.message().to_owned())
    }
}

fn valid() -> LogStreamDescriptor {
    descriptor_message(&path("live/+/s"))
}

#[tokio::test]
async fn the_descriptor_helper_passes_validation() {
    let f = fixture().await;
    f.server
        .client()
        .register_stream(f.request(valid()))
        .await
        .expect("the helper's descriptor is valid");
    assert_eq!(f.server.streams().len(), 1);
}

/// Every kind of descriptor `coordinator_services::descriptor::DescriptorBuilder`
/// makes passes the server's validation, the default timestamp (now) included,
/// and the helpers are that builder with a fixed timestamp.
#[tokio::test]
async fn descriptor_builder_output_passes_validation() {
    use coordinator_grpc::proto::logpb::StreamType;
    use coordinator_testkit::{DESCRIPTOR_TIMESTAMP_SECONDS, DescriptorBuilder, descriptor};

    let f = fixture().await;
    let builders = [
        DescriptorBuilder::for_path(&path("live/+/text")),
        DescriptorBuilder::new(&"live".parse().unwrap(), &"bin/0".parse().unwrap())
            .stream_type(StreamType::Binary)
            .content_type("application/octet-stream")
            .binary_file_ext("bin"),
        DescriptorBuilder::for_path(&path("live/+/dgram"))
            .stream_type(StreamType::Datagram)
            .content_type("application/x-logdog-datagram")
            .tag("bot".parse().unwrap(), "linux-1")
            .tag("a.b/c".parse().unwrap(), "x".repeat(4096)),
    ];
    for builder in &builders {
        let req = RegisterStreamRequest {
            desc: builder.to_bytes(),
            ..register_request(&f.project, builder.path(), &f.secret, None)
        };
        f.server
            .client()
            .register_stream(req)
            .await
            .unwrap_or_else(|e| panic!("{builder:?} refused: {e}"));
        let stored = f.server.stream(&f.project, builder.path()).unwrap();
        let desc = LogStreamDescriptor::decode(stored.descriptor.as_slice()).unwrap();
        assert_eq!(desc.stream_type, builder.build().stream_type);
    }
    assert_eq!(f.server.streams().len(), builders.len());

    let helper = LogStreamDescriptor::decode(descriptor(&path("live/+/s")).as_slice()).unwrap();
    assert_eq!(helper, valid());
    assert_eq!(
        helper.timestamp.map(|t| (t.seconds, t.nanos)),
        Some((DESCRIPTOR_TIMESTAMP_SECONDS, 0))
    );
    assert_eq!(
        (helper.content_type.as_str(), helper.stream_type),
        ("text/plain", 0)
    );
}

#[tokio::test]
async fn each_descriptor_rule_answers_invalid_argument_naming_the_field() {
    let f = fixture().await;
    let long_key = "k".repeat(65);
    let cases: Vec<(&str, LogStreamDescriptor, &str)> = vec![
        (
            "invalid prefix",
            LogStreamDescriptor {
                prefix: "_live".into(),
                ..valid()
            },
            "desc.prefix:",
        ),
        (
            "invalid name",
            LogStreamDescriptor {
                name: "a//b".into(),
                ..valid()
            },
            "desc.name:",
        ),
        (
            "unknown stream type",
            LogStreamDescriptor {
                stream_type: 3,
                ..valid()
            },
            "desc.stream_type:",
        ),
        (
            "empty content type",
            LogStreamDescriptor {
                content_type: String::new(),
                ..valid()
            },
            "desc.content_type:",
        ),
        (
            "no timestamp",
            LogStreamDescriptor {
                timestamp: None,
                ..valid()
            },
            "desc.timestamp:",
        ),
        (
            "tag key not a stream name",
            LogStreamDescriptor {
                tags: [("bad key".to_owned(), "v".to_owned())].into(),
                ..valid()
            },
            "desc.tags:",
        ),
        (
            "tag key over 64 bytes",
            LogStreamDescriptor {
                tags: [(long_key.clone(), "v".to_owned())].into(),
                ..valid()
            },
            "desc.tags:",
        ),
        (
            "tag value over 4096 bytes",
            LogStreamDescriptor {
                tags: [("key".to_owned(), "v".repeat(4097))].into(),
                ..valid()
            },
            "desc.tags:",
        ),
    ];
    for (what, desc, field) in cases {
        let (code, msg) = f.refused(f.request(desc)).await;
        assert_eq!(code, Code::InvalidArgument, "{what}: {msg}");
        assert!(msg.starts_with(field), "{what}: {msg}");
    }
    assert!(f.server.streams().is_empty());
}

#[tokio::test]
async fn boundary_values_are_accepted() {
    let f = fixture().await;
    for (i, stream_type) in [0, 1, 2].into_iter().enumerate() {
        let desc = LogStreamDescriptor {
            name: format!("s{i}"),
            stream_type,
            tags: [
                ("k".repeat(64), "v".repeat(4096)),
                ("a/b:c".to_owned(), String::new()),
            ]
            .into(),
            ..valid()
        };
        f.server
            .client()
            .register_stream(f.request(desc))
            .await
            .unwrap_or_else(|s| panic!("stream type {stream_type}: {s:?}"));
    }
    assert_eq!(f.server.streams().len(), 3);
}

#[tokio::test]
async fn empty_descriptor_bytes_fail_validation() {
    let f = fixture().await;
    let req = RegisterStreamRequest {
        desc: Vec::new(),
        ..f.request(valid())
    };
    let (code, msg) = f.refused(req).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("desc.prefix:"), "{msg}");
}

#[tokio::test]
async fn the_checks_run_in_the_real_coordinators_order() {
    let f = fixture().await;
    let unknown_prefix = LogStreamDescriptor {
        prefix: "unknown".into(),
        ..valid()
    };
    let wrong_secret = vec![7; 36];
    let cases: Vec<(&str, RegisterStreamRequest, Code, &str)> = vec![
        (
            "protocol version before an undecodable descriptor",
            RegisterStreamRequest {
                proto_version: "2".into(),
                desc: vec![0xff, 0xff],
                ..f.request(valid())
            },
            Code::InvalidArgument,
            "proto_version:",
        ),
        (
            "decoding before the prefix",
            RegisterStreamRequest {
                desc: vec![0xff, 0xff],
                secret: wrong_secret.clone(),
                ..f.request(unknown_prefix.clone())
            },
            Code::InvalidArgument,
            "desc:",
        ),
        (
            "prefix and name before the other descriptor fields",
            f.request(LogStreamDescriptor {
                name: "_bad".into(),
                content_type: String::new(),
                timestamp: None,
                ..valid()
            }),
            Code::InvalidArgument,
            "desc.name:",
        ),
        (
            "content type before timestamp",
            f.request(LogStreamDescriptor {
                content_type: String::new(),
                timestamp: None,
                ..valid()
            }),
            Code::InvalidArgument,
            "desc.content_type:",
        ),
        (
            "descriptor validation before the prefix lookup",
            f.request(LogStreamDescriptor {
                timestamp: None,
                ..unknown_prefix.clone()
            }),
            Code::InvalidArgument,
            "desc.timestamp:",
        ),
        (
            "an unknown prefix before the secret",
            RegisterStreamRequest {
                secret: wrong_secret.clone(),
                ..f.request(unknown_prefix.clone())
            },
            Code::FailedPrecondition,
            "prefix \"unknown\" is not registered",
        ),
        (
            "an unknown prefix before the secret's length",
            RegisterStreamRequest {
                secret: vec![1; 3],
                ..f.request(unknown_prefix)
            },
            Code::FailedPrecondition,
            "prefix \"unknown\" is not registered",
        ),
        (
            "expiry before the secret",
            RegisterStreamRequest {
                secret: wrong_secret.clone(),
                ..f.request(LogStreamDescriptor {
                    prefix: "gone".into(),
                    ..valid()
                })
            },
            Code::FailedPrecondition,
            "has expired",
        ),
        (
            "finally the secret",
            RegisterStreamRequest {
                secret: wrong_secret,
                ..f.request(valid())
            },
            Code::InvalidArgument,
            "secret:",
        ),
    ];
    for (what, req, want_code, want_msg) in cases {
        let (code, msg) = f.refused(req).await;
        assert_eq!(code, want_code, "{what}: {msg}");
        assert!(msg.contains(want_msg), "{what}: {msg}");
    }
}

#[tokio::test]
async fn live_and_expired_prefixes_coexist() {
    let f = fixture().await;
    f.server.register_prefix(
        &f.project,
        &"later".parse().unwrap(),
        &f.secret,
        Some(Duration::from_secs(3600)),
    );
    for live in ["live", "later"] {
        let p = path(&format!("{live}/+/s"));
        f.server
            .client()
            .register_stream(register_request(&f.project, &p, &f.secret, None))
            .await
            .unwrap_or_else(|s| panic!("{live}: {s:?}"));
    }
    let expired = register_request(&f.project, &path("gone/+/s"), &f.secret, None);
    let (code, msg) = f.refused(expired).await;
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("expired"), "{msg}");
    assert_eq!(f.server.streams().len(), 2);
}
