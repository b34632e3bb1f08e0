//! The fake server behind the real client: `FakeServer::coordinator()` speaks to
//! it through the `Coordinator` trait.

use coordinator_api::{
    Code, Coordinator, MessageIndex, ProjectName, RegisterRequest, StreamId, StreamPath,
    TerminateRequest,
};
use coordinator_testkit::{FakeServicesServer, descriptor};

#[tokio::test]
async fn the_ready_coordinator_registers_and_terminates_on_the_server() {
    let server = FakeServicesServer::start().await;
    let project: ProjectName = "proj".parse().unwrap();
    let secret = server.new_prefix(&project, &"pre".parse().unwrap());
    let path: StreamPath = "pre/+/s".parse().unwrap();
    let coordinator = server.coordinator();

    let request = RegisterRequest::new(project.clone(), path.clone(), secret.clone());
    let state = coordinator
        .register_stream(&request, &descriptor(&path))
        .await
        .unwrap();
    assert_eq!(state.id, StreamId::for_path(&path));
    assert_eq!(state.secret, secret);
    assert_eq!(state.terminal_index, None);

    coordinator
        .terminate_stream(&TerminateRequest::for_state(&state, MessageIndex::from(3)))
        .await
        .unwrap();
    let stored = server.stream(&project, &path).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(3)));
    assert_eq!(stored.state().terminal_index, Some(MessageIndex::from(3)));

    // A server-side status reaches the caller with its code.
    let conflict = coordinator
        .terminate_stream(&TerminateRequest::for_state(&state, MessageIndex::from(4)))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    assert!(!conflict.is_transient());
    let calls = server.calls();
    assert_eq!((calls.register, calls.terminate), (1, 2));
}
