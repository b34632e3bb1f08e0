//! Shared set-up for the loopback tests: a fake server with one registered
//! prefix, request builders, and fast retry policies.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use coordinator_api::{
    LogStreamState, MessageIndex, PrefixSecret, ProjectName, RegisterRequest, StreamName,
    StreamPath, TerminateRequest,
};
use coordinator_grpc::RetryPolicy;
use coordinator_testkit::{FakeServer, FakeServicesServer, descriptor};

/// A running fake server with the prefix `builds/1` registered in project
/// `proj`.
pub struct Setup {
    pub server: FakeServer,
    pub project: ProjectName,
    pub prefix: StreamName,
    pub secret: PrefixSecret,
}

impl Setup {
    pub async fn start() -> Setup {
        let server = FakeServicesServer::start().await;
        let project: ProjectName = "proj".parse().unwrap();
        let prefix: StreamName = "builds/1".parse().unwrap();
        let secret = server.new_prefix(&project, &prefix);
        Setup {
            server,
            project,
            prefix,
            secret,
        }
    }

    pub fn path(&self, name: &str) -> StreamPath {
        self.prefix.join(&name.parse().unwrap())
    }

    /// A register request for `prefix/+/name` and its descriptor.
    pub fn register(&self, name: &str) -> (RegisterRequest, Vec<u8>) {
        let path = self.path(name);
        let desc = descriptor(&path);
        (
            RegisterRequest::new(self.project.clone(), path, self.secret.clone()),
            desc,
        )
    }

    pub fn terminate(&self, state: &LogStreamState, index: u32) -> TerminateRequest {
        TerminateRequest::for_state(state, MessageIndex::from(index))
    }
}

/// Retries with millisecond delays, no jitter.
pub fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(max_retries)
        .with_initial_delay(Duration::from_millis(2))
        .with_max_delay(Duration::from_millis(10))
        .with_jitter(0.0)
}
