//! The `fake-coordinator` binary: `--print-descriptor`, and a JSON pRPC call
//! with a required token against a running instance.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use coordinator_api::{StreamId, StreamPath};
use coordinator_testkit::descriptor;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BIN: &str = env!("CARGO_BIN_EXE_fake-coordinator");
const SECRET_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223";

#[test]
fn print_descriptor_prints_the_helpers_descriptor_in_base64() {
    let out = Command::new(BIN)
        .args(["--print-descriptor", "builds/1/+/stdout"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let path: StreamPath = "builds/1/+/stdout".parse().unwrap();
    assert_eq!(STANDARD.decode(text.trim()).unwrap(), descriptor(&path));
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_prpc_json_with_a_required_token() {
    let mut child = Killed(
        Command::new(BIN)
            .args([
                "--prefix",
                &format!("chromium:builds/1:{SECRET_HEX}"),
                "--prefix",
                &format!("chromium:old:{SECRET_HEX}@0"),
                "--token",
                "t0ken",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let grpc = lines.next().unwrap().unwrap();
    assert!(grpc.starts_with("listening on http://127.0.0.1:"), "{grpc}");
    let prpc = lines.next().unwrap().unwrap();
    let endpoint = prpc.strip_prefix("prpc on ").unwrap().to_owned();
    let prefix_line = lines.next().unwrap().unwrap();
    assert!(prefix_line.ends_with(SECRET_HEX), "{prefix_line}");
    let expired_line = lines.next().unwrap().unwrap();
    assert!(expired_line.contains("prefix=old"), "{expired_line}");

    let path: StreamPath = "builds/1/+/stdout".parse().unwrap();
    let body_for = |path: &StreamPath| {
        serde_json::json!({
            "project": "chromium",
            "secret": STANDARD.encode(hex::decode(SECRET_HEX).unwrap()),
            "protoVersion": "1",
            "desc": STANDARD.encode(descriptor(path)),
            "terminalIndex": "-1",
        })
        .to_string()
    };
    let client = Client::builder(TokioExecutor::new()).build_http();
    let call = |auth: Option<&str>, body: String| {
        let mut req = Request::post(format!("{endpoint}/prpc/logdog.Services/RegisterStream"))
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let client = client.clone();
        async move {
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(
        call(None, body_for(&path)).await,
        (403, "not a service\n".to_owned())
    );
    let (status, text) = call(Some("Bearer t0ken"), body_for(&path)).await;
    assert_eq!(status, 200, "{text}");
    let json: serde_json::Value =
        serde_json::from_str(text.strip_prefix(")]}'\n").unwrap()).unwrap();
    assert_eq!(json["id"], StreamId::for_path(&path).as_str());

    // `@0`: that prefix is registered already expired, the other one lives on.
    let expired: StreamPath = "old/+/stdout".parse().unwrap();
    let (status, text) = call(Some("Bearer t0ken"), body_for(&expired)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("has expired"), "{text}");
}
