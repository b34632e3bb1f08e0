//! Shared fixture of the server tests: a started fake server with one registered
//! prefix and a raw tonic client.

use coordinator_api::{PrefixSecret, ProjectName, StreamPath};
use coordinator_grpc::proto::logdog::services_client::ServicesClient;
use coordinator_testkit::{FakeServer, FakeServicesServer};
use tonic::transport::Channel;

pub(crate) fn path(s: &str) -> StreamPath {
    s.parse().unwrap()
}

pub(crate) struct Fixture {
    pub(crate) server: FakeServer,
    pub(crate) client: ServicesClient<Channel>,
    pub(crate) project: ProjectName,
    pub(crate) secret: PrefixSecret,
}

/// A server with prefix `pre` registered in project `proj`.
pub(crate) async fn fixture() -> Fixture {
    let server = FakeServicesServer::start().await;
    let project: ProjectName = "proj".parse().unwrap();
    let secret = server.new_prefix(&project, &"pre".parse().unwrap());
    Fixture {
        client: server.client(),
        server,
        project,
        secret,
    }
}
