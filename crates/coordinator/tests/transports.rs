//! The whole stack over each transport, from one parametrized suite: the same
//! collector workload, faults, bad input, authentication failures and secrecy
//! checks run over gRPC and over pRPC against the fake Coordinator (which
//! serves both from one state). What differs between the transports is only how
//! the client is built ([`Transport::stack`]).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Feeder, Workload, WorkloadSpec, fast_retry};
use coordinator::cache::CachedCoordinator;
use coordinator::services::{BatchOptions, ServicesStack};
use coordinator_api::{Code, Coordinator, RegisterRequest};
use coordinator_grpc::GrpcCoordinatorBuilder;
use coordinator_prpc::PrpcCoordinatorBuilder;
use coordinator_testkit::{FakeServer, FakeServicesServer, descriptor};

#[derive(Debug, Clone, Copy)]
enum Transport {
    Grpc,
    Prpc,
}

const BOTH: [Transport; 2] = [Transport::Grpc, Transport::Prpc];

impl Transport {
    /// The usual batched, retrying stack over this transport to `server`,
    /// sending `token` if given.
    fn stack(self, server: &FakeServer, token: Option<&str>) -> Arc<dyn Coordinator> {
        self.stack_and_debug(server, token).0
    }

    /// [`stack`](Self::stack), and the client's `Debug` output.
    fn stack_and_debug(
        self,
        server: &FakeServer,
        token: Option<&str>,
    ) -> (Arc<dyn Coordinator>, String) {
        let stack = ServicesStack::new()
            .retry(fast_retry(6))
            .attempt_timeout(Duration::from_millis(500))
            .concurrency_limit(4)
            .batching(
                BatchOptions::default()
                    .with_max_entries(8)
                    .with_max_delay(Duration::from_millis(2)),
            );
        match self {
            Transport::Grpc => {
                let mut b = GrpcCoordinatorBuilder::default().stack(stack);
                if let Some(t) = token {
                    b = b.bearer_token(t);
                }
                let c = b.build(server.channel()).unwrap();
                let debug = format!("{c:?}");
                (Arc::new(c) as Arc<dyn Coordinator>, debug)
            }
            Transport::Prpc => {
                let mut b = PrpcCoordinatorBuilder::default()
                    .insecure(true)
                    .stack(stack);
                if let Some(t) = token {
                    b = b.bearer_token(t);
                }
                let c = b.build(&server.prpc_endpoint()).unwrap();
                let debug = format!("{c:?}");
                (Arc::new(c) as Arc<dyn Coordinator>, debug)
            }
        }
    }
}

const SPEC: WorkloadSpec = WorkloadSpec {
    streams: 150,
    impostors: 0,
    prefixes: 4,
    max_bundles: 4,
    single_bundle: 0.15,
    open: 0.15,
    duplicate: 0.1,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_under_faults_loses_nothing_over_either_transport() {
    for transport in BOTH {
        let seed = common::seed(0x7a45);
        let workload = Arc::new(Workload::generate(&SPEC, seed));
        let server = FakeServicesServer::start().await;
        workload.register_prefixes(&server);
        let faults = server.faults();
        faults.fail_fraction(0.1, Code::Unavailable, seed);
        faults.set_latency(Duration::from_millis(1));
        faults.drop_next_batch_entries(5);
        faults.empty_next_batches(2);
        let inner = transport.stack(&server, None);
        let cache: Arc<dyn Coordinator> = Arc::new(CachedCoordinator::new(
            inner,
            4096,
            Duration::from_secs(600),
        ));
        let feeder = Feeder::new(&workload, 1);
        feeder.release_all();
        let report = tokio::time::timeout(
            Duration::from_secs(120),
            common::run_collector(cache, workload.clone(), 8, None, feeder),
        )
        .await
        .unwrap_or_else(|_| panic!("{transport:?}: the run hung"));
        let ctx = format!("{transport:?}, seed {seed:#x}");
        assert_eq!(report.panics, 0, "{ctx}");
        assert!(report.failures.is_empty(), "{ctx}: {:#?}", report.failures);
        assert_eq!(report.acked as usize, workload.deliveries.len(), "{ctx}");
        let problems = common::verify(&server, &workload);
        assert!(problems.is_empty(), "{ctx}: {problems:#?}");
        assert!(server.calls().batch > 0, "{ctx}");
        if let Transport::Prpc = transport {
            assert!(server.calls().prpc_rpcs > 0, "{ctx}");
            assert!(
                server.prpc_connections() <= 4,
                "{ctx}: connections are reused"
            );
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_any_rpc_over_either_transport() {
    for transport in BOTH {
        let server = FakeServicesServer::start().await;
        let coordinator = transport.stack(&server, None);
        let mut request = RegisterRequest::parse("proj", "a/+/b", &[3; 36], None).unwrap();
        request.proto_version = "".into();
        let e = coordinator
            .register_stream(&request, &descriptor(&request.path))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{transport:?}");
        assert_eq!(e.field(), Some("proto_version"), "{transport:?}");
        let calls = server.calls();
        assert_eq!(calls.register + calls.batch, 0, "{transport:?}");
        // A server-side verdict on bad input arrives as the same permanent error.
        let unknown_prefix = RegisterRequest::parse("proj", "nowhere/+/b", &[3; 36], None).unwrap();
        let e = coordinator
            .register_stream(&unknown_prefix, &descriptor(&unknown_prefix.path))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{transport:?}: {e}");
        assert!(!e.is_transient(), "{transport:?}");
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_never_shown_over_either_transport() {
    const TOKEN: &str = "ya29.super-secret-token-value";
    const WRONG: &str = "ya29.wrong-token-value-also-secret";
    for transport in BOTH {
        let server = FakeServicesServer::start().await;
        server.set_tokens([TOKEN]);
        let project = "proj".parse().unwrap();
        let prefix = "pre".parse().unwrap();
        let secret = server.new_prefix(&project, &prefix);
        let request = RegisterRequest::new(project, "pre/+/s".parse().unwrap(), secret.clone());
        let desc = descriptor(&request.path);

        // Without the right token: PermissionDenied "not a service", permanent.
        for token in [None, Some(WRONG)] {
            let (coordinator, debug) = transport.stack_and_debug(&server, token);
            let e = coordinator
                .register_stream(&request, &desc)
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{transport:?}: {e}");
            assert!(e.message().contains("not a service"), "{transport:?}: {e}");
            for text in [e.to_string(), format!("{e:?}"), debug] {
                assert!(!text.contains("ya29"), "{transport:?}: {text}");
            }
        }
        assert!(server.stream(&request.project, &request.path).is_none());

        // With it: registered.
        let (coordinator, debug) = transport.stack_and_debug(&server, Some(TOKEN));
        let state = coordinator.register_stream(&request, &desc).await.unwrap();
        assert_eq!(state.secret, secret, "{transport:?}");
        for text in [format!("{state:?}"), debug] {
            assert!(!text.contains("ya29"), "{transport:?}: {text}");
            assert!(
                !text.contains(&format!("{:?}", secret.as_bytes())),
                "{transport:?}"
            );
        }
        server.shutdown().await;
    }
}
