//! The `fake-coordinator` binary: `--print-descriptor`, a JSON pRPC call with
//! a required token against a running instance, the graceful shutdown on
//! SIGTERM with `--dump-on-exit`, and (with the `prometheus` feature)
//! `--metrics-addr`.

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
    assert_eq!(json["id"], *StreamId::for_path(&path).as_str());

    // `@0`: that prefix is registered already expired, the other one lives on.
    let expired: StreamPath = "old/+/stdout".parse().unwrap();
    let (status, text) = call(Some("Bearer t0ken"), body_for(&expired)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("has expired"), "{text}");
}

/// The binary started with `args` and the prefix `chromium:builds/1` (secret
/// [`SECRET_HEX`]): its stdout after the startup lines, its gRPC URL, and the
/// lines it printed on startup.
struct Started {
    child: Killed,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    grpc: String,
    startup: Vec<String>,
}

fn start(args: &[&str]) -> Started {
    let prefix = format!("chromium:builds/1:{SECRET_HEX}");
    let mut child = Killed(
        Command::new(BIN)
            .args(["--prefix", &prefix])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut startup = Vec::new();
    // Up to the prefix line, the last one printed on startup.
    loop {
        let line = stdout.next().unwrap().unwrap();
        let done = line.starts_with("prefix ");
        startup.push(line);
        if done {
            break;
        }
    }
    let grpc = startup[0].strip_prefix("listening on ").unwrap().to_owned();
    Started {
        child,
        stdout,
        grpc,
        startup,
    }
}

impl Started {
    /// Registers `path` (terminated at `terminal` if given) over gRPC.
    async fn register(&self, path: &str, terminal: Option<u32>) {
        use coordinator_grpc::proto::logdog::services_client::ServicesClient;
        let mut client = ServicesClient::connect(self.grpc.clone()).await.unwrap();
        let secret =
            coordinator_api::PrefixSecret::from_bytes(&hex::decode(SECRET_HEX).unwrap()).unwrap();
        let req = coordinator_testkit::register_request(
            &"chromium".parse().unwrap(),
            &path.parse().unwrap(),
            &secret,
            terminal.map(coordinator_api::MessageIndex::from),
        );
        client.register_stream(req).await.unwrap();
    }

    /// Sends `signal` (`TERM`, `INT`) with `kill`, and waits for a successful
    /// exit; returns the rest of stdout. (Blocks: a test calling it runs on a
    /// multi-threaded runtime, so that its clients' connections still close.)
    fn stop(mut self, signal: &str) -> Vec<String> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.0.wait().unwrap();
        assert!(exit.success(), "{exit:?}");
        self.stdout.by_ref().map(Result::unwrap).collect()
    }
}

/// SIGTERM: a graceful shutdown, then the state as JSON in the
/// `--dump-on-exit` file, every stream in it, no secret, exit status 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_and_dumps_the_state_without_secrets() {
    use coordinator_testkit::StateDump;

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("fake-coordinator-dump-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let server = start(&["--dump-on-exit", file.to_str().unwrap()]);
    assert!(
        server.startup[1].starts_with("prpc on http://127.0.0.1:"),
        "{:?}",
        server.startup
    );
    server.register("builds/1/+/stdout", None).await;
    server.register("builds/1/+/stderr", Some(41)).await;
    server.register("builds/1/+/stdout", None).await;

    let rest = server.stop("TERM");
    assert!(
        rest.iter()
            .any(|l| l == &format!("state written to {}", file.display())),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.starts_with("stopped after 3 RPCs")),
        "{rest:?}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let dump: StateDump = serde_json::from_str(&text).unwrap();
    let paths: Vec<(&str, Option<u64>, u64)> = dump
        .streams
        .iter()
        .map(|s| (s.path.as_str(), s.terminal_index, s.registrations))
        .collect();
    assert_eq!(
        paths,
        [
            ("builds/1/+/stderr", Some(41), 1),
            ("builds/1/+/stdout", None, 2)
        ]
    );
    assert_eq!(dump.streams[0].project, "chromium");
    assert_eq!(
        (
            dump.streams[0].prefix.as_str(),
            dump.streams[0].name.as_str()
        ),
        ("builds/1", "stderr")
    );
    assert_eq!(dump.streams[0].proto_version, "1");
    assert_eq!(dump.prefixes.len(), 1);
    assert_eq!(dump.calls.register, 3);

    let secret = hex::decode(SECRET_HEX).unwrap();
    for form in [
        SECRET_HEX.to_owned(),
        SECRET_HEX.to_uppercase(),
        STANDARD.encode(&secret),
        format!("{secret:?}"),
    ] {
        assert!(!text.contains(&form), "the dump holds the secret as {form}");
    }
    assert!(!text.contains("secret"), "{text}");
}

/// `--metrics-addr`: the server's counters, scraped over HTTP, with the
/// numbers of the calls made; SIGINT ends the server gracefully.
#[cfg(feature = "prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_addr_serves_the_servers_counters_for_prometheus() {
    let server = start(&["--metrics-addr", "127.0.0.1:0"]);
    let url = server.startup[2]
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("{:?}", server.startup))
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    server.register("builds/1/+/a", None).await;
    server.register("builds/1/+/b", Some(3)).await;
    server.register("builds/1/+/a", None).await;

    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(Request::get(&url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    for line in [
        "fake_coordinator_rpcs_total{rpc=\"RegisterStream\"} 3",
        "fake_coordinator_rpcs_total{rpc=\"TerminateStream\"} 0",
        "fake_coordinator_streams_registered_total 2",
        "fake_coordinator_streams_terminated_total 1",
        "fake_coordinator_streams 2",
        "fake_coordinator_prpc_rpcs_total 0",
        "fake_coordinator_faults_injected_total{kind=\"call\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(
        text.contains("# TYPE fake_coordinator_rpcs_total counter"),
        "{text}"
    );
    server.stop("INT");
}
