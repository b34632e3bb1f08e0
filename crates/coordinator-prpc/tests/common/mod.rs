//! A tiny scripted HTTP/1.1 server for the pRPC client's tests: it records
//! every request (body gunzipped if it was gzipped) and every accepted
//! connection, and answers what the test's handler says.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    /// The raw body as sent.
    pub raw: Vec<u8>,
    /// The body, gunzipped if `Content-Encoding: gzip`.
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the server answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

pub enum Body {
    /// A body with `Content-Length`.
    Full(Vec<u8>),
    /// `count` chunks of `size` bytes, no `Content-Length` (chunked).
    Chunks { size: usize, count: usize },
}

impl Reply {
    /// A pRPC success: code 0, binary content type, `message` as the body.
    pub fn ok(message: &impl Message) -> Reply {
        Reply::new(200, message.encode_to_vec())
            .header("x-prpc-grpc-code", "0")
            .header("content-type", "application/prpc; encoding=binary")
    }

    /// A pRPC error: code, HTTP status, message + newline.
    pub fn code(code: i32, status: u16, message: &str) -> Reply {
        Reply::new(status, format!("{message}\n").into_bytes())
            .header("x-prpc-grpc-code", &code.to_string())
            .header("content-type", "text/plain; charset=utf-8")
    }

    pub fn new(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Full(body),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// The running server.
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Serves on 127.0.0.1 (a free port), answering each request with
    /// `handler`.
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = {
            let seen = seen.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let handler = handler.clone();
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let handler = handler.clone();
                            let seen = seen.clone();
                            async move { Ok::<_, Infallible>(answer(req, &handler, &seen).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Server {
            addr,
            seen,
            connections,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<Incoming>,
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let (parts, body) = req.into_parts();
    let raw = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let gzipped = parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let body = if gzipped { gunzip(&raw) } else { raw.clone() };
    let request = Seen {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        raw,
        body,
    };
    let reply = handler(&request);
    seen.lock().unwrap().push(request);
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    let body = match reply.body {
        Body::Full(bytes) => Full::new(Bytes::from(bytes)).boxed(),
        Body::Chunks { size, count } => {
            let chunk = Bytes::from(vec![b'x'; size]);
            let frames = futures::stream::iter(
                std::iter::repeat_n(chunk, count).map(|c| Ok::<_, Infallible>(Frame::data(c))),
            );
            BodyExt::boxed(StreamBody::new(frames))
        }
    };
    response.body(body).unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}
