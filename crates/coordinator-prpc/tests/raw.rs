//! Answers no HTTP library would send, from a raw TCP socket: nothing a
//! server sends may panic the client, and failures to talk are transient.

use coordinator_api::{Code, Error};
use coordinator_prpc::proto::logdog as proto;
use coordinator_prpc::{PrpcCoordinator, PrpcServices, ServicesClient};
use coordinator_services::CallOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves one canned answer (`None`: close at once) to every connection.
async fn raw_server(answer: Option<&'static [u8]>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                if let Some(answer) = answer {
                    let _ = stream.write_all(answer).await;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn transport(url: &str) -> PrpcServices {
    PrpcCoordinator::builder()
        .insecure(true)
        .build_transport(url)
        .unwrap()
}

async fn register(url: &str) -> Error {
    transport(url)
        .register_stream(CallOptions::new(), &proto::RegisterStreamRequest::default())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_transient_unavailable() {
    let e = register(&raw_server(None).await).await;
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn garbage_is_a_transient_error_never_a_panic() {
    let answers: [&'static [u8]; 7] = [
        b"not http at all\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Prpc-Grpc-Code: 0\r\nContent-Length: 5\r\n\r\n\xff\xff\xff\xff\xff",
        b"HTTP/1.1 200 OK\r\nX-Prpc-Grpc-Code: 0\r\nContent-Length: 100\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nX-Prpc-Grpc-Code: 0\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
        b"HTTP/1.1 200 OK\r\nX-Prpc-Grpc-Code: \xff\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Prpc-Grpc-Code: 99999999999999999999\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nX-Prpc-Grpc-Code: 13\r\nContent-Length: 4\r\n\r\n\xff\xfe\n\n",
    ];
    for answer in answers {
        let e = register(&raw_server(Some(answer)).await).await;
        assert!(e.is_transient(), "{e}");
        assert!(
            matches!(e.code(), Code::Unavailable | Code::Internal),
            "{:?}: {e}",
            String::from_utf8_lossy(answer)
        );
    }
}

#[tokio::test]
async fn a_content_type_that_is_not_text_is_a_mismatch() {
    let url = raw_server(Some(
        b"HTTP/1.1 200 OK\r\nX-Prpc-Grpc-Code: 0\r\nContent-Type: \xff\r\nContent-Length: 0\r\n\r\n",
    ))
    .await;
    let e = register(&url).await;
    assert_eq!(e.code(), Code::Internal);
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_transient_unavailable() {
    let url = raw_server(Some(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    ))
    .await
    .replace("http://", "https://");
    let t = PrpcCoordinator::builder().build_transport(&url).unwrap();
    assert!(t.base_url().starts_with("https://"));
    let e = t
        .register_stream(CallOptions::new(), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.is_retryable());
}
