//! The fake server's pRPC front end over real HTTP on loopback, with a plain
//! HTTP client (hyper): encodings, headers, status mapping, negotiation,
//! credentials, faults, shared state with gRPC, connection reuse.

use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use coordinator_api::{Code, MessageIndex, PrefixSecret, ProjectName, StreamId, StreamPath};
use coordinator_grpc::proto::logdog::{
    BatchRequest, BatchResponse, LoadStreamRequest, LoadStreamResponse, RegisterStreamRequest,
    RegisterStreamResponse, TerminateStreamRequest, batch_request, batch_response,
};
use coordinator_testkit::{
    FakeServer, FakeServicesServer, descriptor, register_request, terminate_request,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;

const BINARY: &str = "application/prpc; encoding=binary";
const JSON: &str = "application/json";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn path(s: &str) -> StreamPath {
    s.parse().unwrap()
}

/// An answer: HTTP status, headers, body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    fn grpc_code(&self) -> Code {
        Code::from_i32(self.header("x-prpc-grpc-code").parse().unwrap())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// Asserts an error answer: code, HTTP status, text body `message\n`.
    fn assert_error(&self, code: Code, status: u16, message: &str) {
        assert_eq!(self.grpc_code(), code, "{self:?}");
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(self.header("x-content-type-options"), "nosniff");
        assert_eq!(self.text(), format!("{message}\n"), "{self:?}");
    }

    /// The protobuf message of a successful binary answer.
    fn decode<T: Message + Default>(&self) -> T {
        assert_eq!(self.grpc_code(), Code::Ok, "{self:?}");
        assert_eq!(self.status, StatusCode::OK);
        assert_eq!(self.header("content-type"), BINARY);
        assert_eq!(self.header("x-content-type-options"), "nosniff");
        T::decode(self.body.clone()).unwrap()
    }

    /// The JSON value of a successful JSON answer (checking the XSSI prefix).
    fn json(&self) -> serde_json::Value {
        assert_eq!(self.grpc_code(), Code::Ok, "{self:?}");
        assert_eq!(self.header("content-type"), JSON);
        assert_eq!(self.header("x-content-type-options"), "nosniff");
        let text = self.text();
        let json = text
            .strip_prefix(")]}'\n")
            .and_then(|t| t.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("no XSSI prefix or final newline: {text:?}"));
        serde_json::from_str(json).unwrap()
    }
}

struct Fixture {
    server: FakeServer,
    http: HttpClient,
    project: ProjectName,
    secret: PrefixSecret,
}

async fn fixture() -> Fixture {
    fixture_with(FakeServicesServer::builder()).await
}

async fn fixture_with(builder: coordinator_testkit::FakeServicesServerBuilder) -> Fixture {
    let server = builder.start().await;
    let project: ProjectName = "proj".parse().unwrap();
    let secret = server.new_prefix(&project, &"testing".parse().unwrap());
    Fixture {
        server,
        http: http_client(),
        project,
        secret,
    }
}

impl Fixture {
    fn url(&self, method: &str) -> String {
        format!(
            "{}/prpc/logdog.Services/{method}",
            self.server.prpc_endpoint()
        )
    }

    async fn send(&self, method: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        send(&self.http, &self.url(method), "POST", headers, body).await
    }

    /// A binary call.
    async fn binary(&self, method: &str, message: &impl Message) -> Answer {
        self.send(
            method,
            &[("content-type", BINARY), ("accept", BINARY)],
            message.encode_to_vec(),
        )
        .await
    }

    /// A JSON call.
    async fn json(&self, method: &str, body: serde_json::Value) -> Answer {
        self.send(
            method,
            &[("content-type", JSON), ("accept", JSON)],
            body.to_string().into_bytes(),
        )
        .await
    }

    fn register_req(&self, p: &str) -> RegisterStreamRequest {
        register_request(&self.project, &path(p), &self.secret, None)
    }

    fn terminate_req(&self, p: &str, index: u32) -> TerminateStreamRequest {
        terminate_request(
            &self.project,
            &path(p),
            &self.secret,
            MessageIndex::from(index),
        )
    }
}

fn load_req(p: &str) -> LoadStreamRequest {
    LoadStreamRequest {
        project: "proj".into(),
        id: StreamId::for_path(&path(p)).as_str().to_owned(),
        desc: false,
    }
}

async fn send(
    client: &HttpClient,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn binary_round_trip_of_register_terminate_and_batch() {
    let f = fixture().await;
    let resp: RegisterStreamResponse = f
        .binary("RegisterStream", &f.register_req("testing/+/a"))
        .await
        .decode();
    let id = StreamId::for_path(&path("testing/+/a"));
    assert_eq!(resp.id, id.as_str());
    assert_eq!(resp.state.unwrap().terminal_index, -1);

    let term = f
        .binary("TerminateStream", &f.terminate_req("testing/+/a", 3))
        .await;
    assert_eq!(term.grpc_code(), Code::Ok, "{term:?}");
    assert!(
        term.body.is_empty(),
        "google.protobuf.Empty encodes to nothing"
    );
    let stored = f.server.stream(&f.project, &path("testing/+/a")).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(3)));

    use batch_request::entry::Value as Req;
    let batch = BatchRequest {
        req: vec![
            batch_request::Entry {
                value: Some(Req::RegisterStream(f.register_req("testing/+/b"))),
            },
            batch_request::Entry {
                value: Some(Req::TerminateStream(terminate_request(
                    &f.project,
                    &path("testing/+/b"),
                    &PrefixSecret::from([1; 36]),
                    MessageIndex::ZERO,
                ))),
            },
        ],
    };
    let resp: BatchResponse = f.binary("Batch", &batch).await.decode();
    assert_eq!(resp.resp.len(), 2);
    assert!(matches!(
        resp.resp[0].value,
        Some(batch_response::entry::Value::RegisterStream(_))
    ));
    match &resp.resp[1].value {
        Some(batch_response::entry::Value::Err(e)) => {
            assert_eq!(e.grpc_code, Code::InvalidArgument.as_i32());
        }
        other => panic!("{other:?}"),
    }
    let calls = f.server.calls();
    assert_eq!((calls.register, calls.terminate, calls.batch), (1, 1, 1));
    assert_eq!(calls.batch_entries, 2);
}

#[tokio::test]
async fn json_round_trip_with_xssi_prefix() {
    let f = fixture().await;
    let body = serde_json::json!({
        "project": "proj",
        "secret": STANDARD.encode(f.secret.as_bytes()),
        "protoVersion": "1",
        "desc": STANDARD.encode(descriptor(&path("testing/+/j"))),
        "terminalIndex": "-1",
    });
    let answer = f.json("RegisterStream", body).await;
    let json = answer.json();
    let id = StreamId::for_path(&path("testing/+/j"));
    assert_eq!(json["id"], *id.as_str());
    assert_eq!(json["state"]["protoVersion"], "1");
    assert_eq!(
        json["state"]["secret"],
        STANDARD.encode(f.secret.as_bytes())
    );
    assert_eq!(json["state"]["terminalIndex"], "-1");

    // proto field names are accepted too, and unknown fields are ignored.
    let load = f
        .json(
            "LoadStream",
            serde_json::json!({"project": "proj", "id": &*id.as_str(), "desc": true, "extra": 1}),
        )
        .await
        .json();
    assert_eq!(
        load["desc"],
        STANDARD.encode(descriptor(&path("testing/+/j")))
    );

    // An empty answer is `{}`.
    let term = f
        .json(
            "TerminateStream",
            serde_json::json!({
                "project": "proj",
                "id": &*id.as_str(),
                "secret": STANDARD.encode(f.secret.as_bytes()),
                "terminal_index": "0",
            }),
        )
        .await;
    assert_eq!(term.text(), ")]}'\n{}\n");
}

#[tokio::test]
async fn every_error_code_maps_to_its_http_status_and_server_codes_hide_their_message() {
    let f = fixture().await;
    let load = load_req("testing/+/x");
    let table = [
        (Code::Cancelled, 499, "injected fault"),
        (Code::Unknown, 500, "unknown server error"),
        (Code::InvalidArgument, 400, "injected fault"),
        (Code::DeadlineExceeded, 504, "deadline exceeded"),
        (Code::NotFound, 404, "injected fault"),
        (Code::AlreadyExists, 409, "injected fault"),
        (Code::PermissionDenied, 403, "injected fault"),
        (Code::ResourceExhausted, 429, "injected fault"),
        (Code::FailedPrecondition, 400, "injected fault"),
        (Code::Aborted, 409, "injected fault"),
        (Code::OutOfRange, 400, "injected fault"),
        (Code::Unimplemented, 501, "method not implemented"),
        (Code::Internal, 500, "internal server error"),
        (Code::Unavailable, 503, "service unavailable"),
        (Code::DataLoss, 500, "data loss"),
        (Code::Unauthenticated, 401, "injected fault"),
    ];
    for (code, status, message) in table {
        f.server.faults().fail_next(1, code);
        f.binary("LoadStream", &load)
            .await
            .assert_error(code, status, message);
    }

    // Real (not injected) errors keep their own message.
    let answer = f.binary("LoadStream", &load).await;
    answer.assert_error(
        Code::NotFound,
        404,
        &format!("no stream with ID {} in project \"proj\"", load.id),
    );
    let unknown_prefix = f
        .binary("RegisterStream", &f.register_req("nope/+/s"))
        .await;
    assert_eq!(unknown_prefix.grpc_code(), Code::FailedPrecondition);
    assert_eq!(unknown_prefix.status.as_u16(), 400);
    assert!(
        unknown_prefix
            .text()
            .ends_with("not registered in project \"proj\"\n")
    );
}

#[tokio::test]
async fn protocol_errors_415_406_400_501_405() {
    let f = fixture().await;
    let body = f.register_req("testing/+/s").encode_to_vec();
    // (what, method, headers, body, code, HTTP status)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        Code,
        u16,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "unsupported content type",
            "RegisterStream",
            vec![("content-type", "text/html")],
            body.clone(),
            Code::InvalidArgument,
            415,
        ),
        (
            "text encoding (not supported)",
            "RegisterStream",
            vec![("content-type", "application/prpc; encoding=text")],
            body.clone(),
            Code::InvalidArgument,
            415,
        ),
        (
            "unsupported content encoding",
            "RegisterStream",
            vec![("content-type", BINARY), ("content-encoding", "br")],
            body.clone(),
            Code::InvalidArgument,
            415,
        ),
        (
            "unsatisfiable accept",
            "RegisterStream",
            vec![("content-type", BINARY), ("accept", "image/png")],
            body.clone(),
            Code::InvalidArgument,
            406,
        ),
        (
            "malformed accept",
            "RegisterStream",
            vec![("accept", "application/json;q=x")],
            body.clone(),
            Code::InvalidArgument,
            400,
        ),
        (
            "undecodable binary body",
            "RegisterStream",
            vec![("content-type", BINARY)],
            vec![0xff, 0xff, 0xff],
            Code::InvalidArgument,
            400,
        ),
        (
            "undecodable JSON body",
            "RegisterStream",
            vec![("content-type", JSON)],
            b"{\"project\": ".to_vec(),
            Code::InvalidArgument,
            400,
        ),
        (
            "JSON of the wrong shape",
            "RegisterStream",
            vec![("content-type", JSON)],
            b"{\"project\": 5}".to_vec(),
            Code::InvalidArgument,
            400,
        ),
        (
            "malformed timeout",
            "RegisterStream",
            vec![("x-prpc-grpc-timeout", "soon")],
            body.clone(),
            Code::InvalidArgument,
            400,
        ),
        (
            "corrupt gzip",
            "RegisterStream",
            vec![("content-encoding", "gzip")],
            body.clone(),
            Code::InvalidArgument,
            400,
        ),
        (
            "unknown method",
            "Frobnicate",
            vec![],
            body.clone(),
            Code::Unimplemented,
            501,
        ),
    ];
    for (what, method, headers, body, code, status) in cases {
        let answer = f.send(method, &headers, body).await;
        assert_eq!(answer.grpc_code(), code, "{what}: {answer:?}");
        assert_eq!(answer.status.as_u16(), status, "{what}: {answer:?}");
        assert_eq!(answer.header("content-type"), "text/plain; charset=utf-8");
        assert!(answer.text().ends_with('\n'), "{what}");
    }

    let other_service = send(
        &f.http,
        &format!(
            "{}/prpc/other.Service/RegisterStream",
            f.server.prpc_endpoint()
        ),
        "POST",
        &[],
        body.clone(),
    )
    .await;
    other_service.assert_error(Code::Unimplemented, 501, "method not implemented");
    let not_prpc = send(
        &f.http,
        &format!(
            "{}/logdog.Services/RegisterStream",
            f.server.prpc_endpoint()
        ),
        "POST",
        &[],
        body.clone(),
    )
    .await;
    not_prpc.assert_error(Code::Unimplemented, 501, "method not implemented");
    let get = send(&f.http, &f.url("RegisterStream"), "GET", &[], Vec::new()).await;
    assert_eq!(get.status.as_u16(), 405);
    assert_eq!(get.grpc_code(), Code::Unimplemented);

    // The undecodable requests never reached the service.
    assert_eq!(f.server.calls().total_rpcs(), 0);
    assert!(f.server.streams().is_empty());
}

#[tokio::test]
async fn accept_q_values_choose_the_response_encoding() {
    let f = fixture().await;
    let req = f.register_req("testing/+/s").encode_to_vec();
    let cases = [
        (None, BINARY),
        (Some("*/*"), BINARY),
        (Some("application/*"), BINARY),
        (Some("application/prpc"), BINARY),
        (Some("application/json"), JSON),
        (Some("application/json, application/prpc"), BINARY),
        (Some("application/json;q=0.9, application/prpc;q=0.5"), JSON),
        (Some("application/json;q=0.5, */*;q=0.9"), BINARY),
        (Some("application/prpc;q=0, application/*;q=0.2"), JSON),
    ];
    for (accept, want) in cases {
        let mut headers = vec![("content-type", BINARY)];
        headers.extend(accept.map(|a| ("accept", a)));
        let answer = f.send("RegisterStream", &headers, req.clone()).await;
        assert_eq!(answer.grpc_code(), Code::Ok, "{accept:?}: {answer:?}");
        assert_eq!(answer.header("content-type"), want, "{accept:?}");
        assert_eq!(
            answer.body.starts_with(b")]}'\n"),
            want == JSON,
            "{accept:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_content_type_means_binary() {
    let f = fixture().await;
    let answer = f
        .send(
            "RegisterStream",
            &[],
            f.register_req("testing/+/s").encode_to_vec(),
        )
        .await;
    let resp: RegisterStreamResponse = answer.decode();
    assert!(resp.state.is_some());
}

#[tokio::test]
async fn credentials_are_required_on_both_protocols_when_configured() {
    let f = fixture_with(FakeServicesServer::builder().token("tok-1").token("tok-2")).await;
    let req = f.register_req("testing/+/s").encode_to_vec();
    for auth in [
        None,
        Some("Bearer nope"),
        Some("tok-1"),
        Some("Basic tok-1"),
    ] {
        let mut headers = vec![("content-type", BINARY)];
        headers.extend(auth.map(|a| ("authorization", a)));
        f.send("RegisterStream", &headers, req.clone())
            .await
            .assert_error(Code::PermissionDenied, 403, "not a service");
    }
    // Before anything else: even an unsupported request is refused for it.
    f.send(
        "RegisterStream",
        &[("content-type", "text/html")],
        b"junk".to_vec(),
    )
    .await
    .assert_error(Code::PermissionDenied, 403, "not a service");
    assert_eq!(
        f.server.calls().total_rpcs(),
        0,
        "refused calls are not counted"
    );

    for token in ["Bearer tok-1", "bearer tok-2"] {
        let answer = f
            .send(
                "RegisterStream",
                &[("content-type", BINARY), ("authorization", token)],
                req.clone(),
            )
            .await;
        assert_eq!(answer.grpc_code(), Code::Ok, "{token}: {answer:?}");
    }

    // gRPC: the same tokens, in the `authorization` metadata.
    let grpc_req = f.register_req("testing/+/g");
    let status = f
        .server
        .client()
        .register_stream(grpc_req.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "not a service");
    let mut authed = tonic::Request::new(grpc_req);
    authed
        .metadata_mut()
        .insert("authorization", "Bearer tok-2".parse().unwrap());
    f.server.client().register_stream(authed).await.unwrap();
    assert_eq!(f.server.calls().register, 3);

    // Tokens can be changed (or dropped) at run time.
    f.server.set_tokens(Vec::<String>::new());
    let open = f.send("RegisterStream", &[], req).await;
    assert_eq!(open.grpc_code(), Code::Ok);
}

#[tokio::test]
async fn faults_apply_to_prpc_calls() {
    let f = fixture().await;
    // Dropped batch entries.
    f.server.faults().drop_next_batch_entries(1);
    let batch = BatchRequest {
        req: ["testing/+/a", "testing/+/b"]
            .iter()
            .map(|p| batch_request::Entry {
                value: Some(batch_request::entry::Value::RegisterStream(
                    f.register_req(p),
                )),
            })
            .collect(),
    };
    let resp: BatchResponse = f.binary("Batch", &batch).await.decode();
    assert_eq!(resp.resp.len(), 1);
    assert_eq!(resp.resp[0].index, 1);
    assert_eq!(
        f.server.streams().len(),
        2,
        "the dropped entry was processed"
    );

    // Latency against the client's timeout: DeadlineExceeded, state unchanged.
    f.server.faults().set_latency(Duration::from_millis(300));
    let slow = f
        .send(
            "RegisterStream",
            &[("x-prpc-grpc-timeout", "50m")],
            f.register_req("testing/+/slow").encode_to_vec(),
        )
        .await;
    slow.assert_error(Code::DeadlineExceeded, 504, "deadline exceeded");
    assert!(
        f.server
            .stream(&f.project, &path("testing/+/slow"))
            .is_none()
    );
    // A timeout that leaves room is met.
    let ok = f
        .send(
            "RegisterStream",
            &[("x-prpc-grpc-timeout", "5S")],
            f.register_req("testing/+/slow").encode_to_vec(),
        )
        .await;
    assert_eq!(ok.grpc_code(), Code::Ok);
    f.server.faults().set_latency(Duration::ZERO);

    // A call held at the gate answers Unavailable when the server stops.
    let mut server = f.server;
    server.faults().hold();
    let url = format!("{}/prpc/logdog.Services/LoadStream", server.prpc_endpoint());
    let held = tokio::spawn(async move {
        send(
            &http_client(),
            &url,
            "POST",
            &[],
            LoadStreamRequest::default().encode_to_vec(),
        )
        .await
    });
    server.faults().wait_held(1).await;
    server.restart(true).await;
    held.await
        .unwrap()
        .assert_error(Code::Unavailable, 503, "service unavailable");
    server.faults().clear();

    // After the restart, pRPC serves again on the same port, state kept.
    let answer = send(
        &http_client(),
        &format!("{}/prpc/logdog.Services/LoadStream", server.prpc_endpoint()),
        "POST",
        &[],
        load_req("testing/+/a").encode_to_vec(),
    )
    .await;
    let _: LoadStreamResponse = answer.decode();
}

#[tokio::test]
async fn grpc_and_prpc_share_one_state() {
    let f = fixture().await;
    // Registered over gRPC, terminated over pRPC, loaded over both.
    f.server
        .client()
        .register_stream(f.register_req("testing/+/s"))
        .await
        .unwrap();
    let term = f
        .binary("TerminateStream", &f.terminate_req("testing/+/s", 9))
        .await;
    assert_eq!(term.grpc_code(), Code::Ok);
    let load = load_req("testing/+/s");
    let over_grpc = f
        .server
        .client()
        .load_stream(load.clone())
        .await
        .unwrap()
        .into_inner();
    let over_prpc: LoadStreamResponse = f.binary("LoadStream", &load).await.decode();
    assert_eq!(over_grpc.state, over_prpc.state);
    assert_eq!(over_prpc.state.unwrap().terminal_index, 9);
    let calls = f.server.calls();
    assert_eq!((calls.register, calls.terminate, calls.load), (1, 1, 2));
    assert_eq!(calls.prpc_rpcs, 2, "the terminate and one load");
}

#[tokio::test]
async fn connections_are_counted_and_reused() {
    let f = fixture().await;
    assert_eq!(f.server.prpc_connections(), 0);
    for i in 0..5 {
        let answer = f
            .binary(
                "RegisterStream",
                &f.register_req(&format!("testing/+/s{i}")),
            )
            .await;
        assert_eq!(answer.grpc_code(), Code::Ok);
    }
    assert_eq!(f.server.prpc_connections(), 1, "one keep-alive connection");
    assert_eq!(f.server.calls().prpc_connections, 1);

    // Another client, over cleartext HTTP/2 this time: a second connection.
    let h2: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for _ in 0..3 {
        let answer = send(
            &h2,
            &f.url("RegisterStream"),
            "POST",
            &[("content-type", BINARY)],
            f.register_req("testing/+/s0").encode_to_vec(),
        )
        .await;
        assert_eq!(answer.grpc_code(), Code::Ok);
    }
    assert_eq!(f.server.prpc_connections(), 2);
    // gRPC calls are not pRPC connections.
    f.server
        .client()
        .register_stream(f.register_req("testing/+/g"))
        .await
        .unwrap();
    assert_eq!(f.server.prpc_connections(), 2);
}

#[tokio::test]
async fn gzip_requests_and_responses() {
    let f = fixture().await;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&f.register_req("testing/+/z").encode_to_vec())
        .unwrap();
    let zipped = enc.finish().unwrap();
    let answer = f
        .send(
            "RegisterStream",
            &[
                ("content-type", BINARY),
                ("content-encoding", "gzip"),
                ("accept-encoding", "gzip"),
            ],
            zipped,
        )
        .await;
    assert_eq!(answer.grpc_code(), Code::Ok, "{answer:?}");
    assert_eq!(answer.header("content-encoding"), "gzip");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&answer.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    let resp = RegisterStreamResponse::decode(plain.as_slice()).unwrap();
    assert_eq!(resp.id, StreamId::for_path(&path("testing/+/z")).as_str());

    // Without Accept-Encoding (or with gzip;q=0): plain.
    for accept_encoding in [None, Some("gzip;q=0")] {
        let mut headers = vec![("content-type", BINARY)];
        headers.extend(accept_encoding.map(|a| ("accept-encoding", a)));
        let answer = f
            .send(
                "RegisterStream",
                &headers,
                f.register_req("testing/+/z").encode_to_vec(),
            )
            .await;
        assert!(answer.headers.get("content-encoding").is_none());
        let _: RegisterStreamResponse = answer.decode();
    }
}

#[tokio::test]
async fn hostile_requests_are_answered_not_crashed_on() {
    let f = fixture().await;
    let body = f.register_req("testing/+/s").encode_to_vec();
    // Header values that are not text.
    for name in [
        "content-type",
        "accept",
        "x-prpc-grpc-timeout",
        "content-encoding",
    ] {
        let req = Request::post(f.url("RegisterStream"))
            .header(name, http::HeaderValue::from_bytes(b"\xff\xfe").unwrap())
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let resp = f.http.request(req).await.unwrap();
        let code = resp.headers()["x-prpc-grpc-code"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(code, "3", "{name}: InvalidArgument");
        assert!(
            resp.status().is_client_error(),
            "{name}: {:?}",
            resp.status()
        );
    }
    // A timeout as large as allowed is fine.
    let ok = f
        .send(
            "RegisterStream",
            &[("x-prpc-grpc-timeout", "99999999H")],
            body.clone(),
        )
        .await;
    assert_eq!(ok.grpc_code(), Code::Ok, "{ok:?}");
    // A gzip bomb: small on the wire, over the limit once unzipped.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0; 40 << 20]).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let answer = f
        .send("RegisterStream", &[("content-encoding", "gzip")], bomb)
        .await;
    assert_eq!(answer.grpc_code(), Code::InvalidArgument, "{answer:?}");
    assert!(answer.text().contains("once gunzipped"), "{answer:?}");
    // Truncated protobuf and a JSON array instead of an object.
    for (content_type, junk) in [(BINARY, &body[..body.len() / 2]), (JSON, &b"[1, 2]"[..])] {
        let answer = f
            .send(
                "RegisterStream",
                &[("content-type", content_type)],
                junk.to_vec(),
            )
            .await;
        assert_eq!(answer.grpc_code(), Code::InvalidArgument, "{answer:?}");
        assert_eq!(answer.status.as_u16(), 400);
    }
    // The server still serves.
    let _: RegisterStreamResponse = f
        .binary("RegisterStream", &f.register_req("testing/+/s"))
        .await
        .decode();
}
