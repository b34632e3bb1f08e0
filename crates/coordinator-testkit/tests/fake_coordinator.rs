//! Behaviour of `FakeCoordinator` and `MockCoordinator`.

use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{
    Code, Coordinator, Error, LogStreamState, MessageIndex, PrefixSecret, RegisterRequest,
    StreamId, TerminateRequest,
};
use coordinator_testkit::{FakeCoordinator, Fault, MockCoordinator, Operation, OperationCounts};
use tokio::time::Instant;

const SECRET: [u8; 36] = [0x5a; 36];

fn request(path: &str) -> RegisterRequest {
    RegisterRequest::parse("chromium", path, &SECRET, None).unwrap()
}

fn terminate(state: &LogStreamState, index: u32) -> TerminateRequest {
    TerminateRequest::for_state(state, MessageIndex::from(index))
}

#[tokio::test]
async fn counts_records_and_marks_answers() {
    let fake = FakeCoordinator::new();
    let a = request("p/+/a");
    let b = request("p/+/b");

    let sa = fake.register_stream(&a, b"desc-a").await.unwrap();
    let sb = fake.register_stream(&b, b"desc-b").await.unwrap();
    fake.terminate_stream(&terminate(&sa, 4)).await.unwrap();

    // The answer is the remote's: an ID derived from the path and a marked version
    // carrying the call's serial, plus the request's identity.
    assert_eq!(sa.id, StreamId::for_path(&a.path));
    assert_eq!(sa.path, a.path);
    assert_eq!(sa.project, a.project);
    assert_eq!(sa.proto_version, "1+fake.1");
    assert_eq!(FakeCoordinator::serial_of(&sa), Some(1));
    assert_eq!(FakeCoordinator::serial_of(&sb), Some(2));
    assert_eq!(
        FakeCoordinator::serial_of(&LogStreamState::from_request(&a, sa.id.clone())),
        None
    );

    assert_eq!(
        fake.calls(Operation::Register),
        OperationCounts {
            started: 2,
            completed: 2,
            failed: 0,
            cancelled: 0
        }
    );
    assert_eq!(fake.calls(Operation::Terminate).completed, 1);
    let seen = fake.registers();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (&seen[0].request, seen[0].desc.as_slice()),
        (&a, &b"desc-a"[..])
    );
    assert_eq!(
        (&seen[1].request, seen[1].desc.as_slice()),
        (&b, &b"desc-b"[..])
    );
    assert_eq!(fake.terminates(), vec![terminate(&sa, 4)]);

    fake.set_mark_states(false);
    let plain = fake.register_stream(&a, b"").await.unwrap();
    assert_eq!(plain.proto_version, "1");
    assert_eq!(FakeCoordinator::serial_of(&plain), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_holds_every_call_until_released() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let fake = fake.clone();
            tokio::spawn(async move {
                fake.register_stream(&request(&format!("p/+/s{i}")), b"")
                    .await
            })
        })
        .collect();
    fake.wait_for_held(10).await;
    assert_eq!(fake.calls(Operation::Register).started, 10);
    assert_eq!(fake.calls(Operation::Register).completed, 0);

    assert_eq!(fake.release(3), 3);
    fake.wait_for_completed(Operation::Register, 3).await;
    assert_eq!(fake.held(), 7);
    assert_eq!(fake.calls(Operation::Register).completed, 3);

    // Still holding: a new call waits too.
    let late = {
        let fake = fake.clone();
        tokio::spawn(async move { fake.register_stream(&request("p/+/late"), b"").await })
    };
    fake.wait_for_held(8).await;

    assert_eq!(fake.open(), 8);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    late.await.unwrap().unwrap();
    assert_eq!(fake.held(), 0);
    // The gate is open: calls pass straight through.
    fake.register_stream(&request("p/+/after"), b"")
        .await
        .unwrap();
    assert_eq!(fake.calls(Operation::Register).completed, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_next_holds_only_that_many() {
    let fake = FakeCoordinator::new();
    fake.hold_next(2);
    let held: Vec<_> = (0..2)
        .map(|i| {
            let fake = fake.clone();
            tokio::spawn(async move {
                fake.register_stream(&request(&format!("p/+/h{i}")), b"")
                    .await
            })
        })
        .collect();
    fake.wait_for_held(2).await;
    // The third call is not held.
    fake.register_stream(&request("p/+/free"), b"")
        .await
        .unwrap();
    assert_eq!(fake.held(), 2);
    assert_eq!(fake.release_all(), 2);
    for call in held {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_newest_lets_the_latest_arrival_go_first() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let first = {
        let fake = fake.clone();
        tokio::spawn(async move { fake.register_stream(&request("p/+/first"), b"").await })
    };
    fake.wait_for_held(1).await;
    let second = {
        let fake = fake.clone();
        tokio::spawn(async move { fake.register_stream(&request("p/+/second"), b"").await })
    };
    fake.wait_for_held(2).await;

    assert_eq!(fake.release_newest(1), 1);
    let state = second.await.unwrap().unwrap();
    assert_eq!(state.path.as_str(), "p/+/second");
    assert_eq!(fake.held(), 1);
    assert!(!first.is_finished());
    assert_eq!(fake.release_newest(5), 1);
    assert_eq!(first.await.unwrap().unwrap().path.as_str(), "p/+/first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_is_counted_as_cancelled_and_leaves_the_gate() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let call = {
        let fake = fake.clone();
        tokio::spawn(async move { fake.register_stream(&request("p/+/a"), b"").await })
    };
    fake.wait_for_held(1).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert_eq!(fake.held(), 0);
    assert_eq!(
        fake.calls(Operation::Register),
        OperationCounts {
            started: 1,
            completed: 0,
            failed: 0,
            cancelled: 1
        }
    );
}

#[tokio::test]
async fn faults_fail_the_calls_they_match() {
    let fake = FakeCoordinator::new();
    let a = request("p/+/a");
    let b = request("p/+/b");

    fake.fail_next(Operation::Register, 2, Error::unavailable("down"));
    for _ in 0..2 {
        let e = fake.register_stream(&a, b"").await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.is_transient());
    }
    let state = fake.register_stream(&a, b"").await.unwrap();
    assert_eq!(FakeCoordinator::serial_of(&state), Some(3));

    // A fault for one stream leaves the others alone; a permanent one stays until
    // cleared.
    fake.inject(
        Fault::new(Error::failed_precondition("no prefix")).for_stream(&b.project, &b.path),
    );
    for _ in 0..3 {
        let e = fake.register_stream(&b, b"").await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(!e.is_transient());
    }
    fake.register_stream(&a, b"").await.unwrap();

    // Operation filter: a terminate-only fault does not touch registers.
    fake.clear_faults();
    fake.inject(
        Fault::new(Error::internal("boom"))
            .on(Operation::Terminate)
            .times(1),
    );
    let sb = fake.register_stream(&b, b"").await.unwrap();
    assert_eq!(
        fake.terminate_stream(&terminate(&sb, 1))
            .await
            .unwrap_err()
            .code(),
        Code::Internal
    );
    fake.terminate_stream(&terminate(&sb, 1)).await.unwrap();

    assert_eq!(fake.calls(Operation::Register).failed, 5);
    assert_eq!(fake.calls(Operation::Terminate).failed, 1);
}

#[tokio::test(start_paused = true)]
async fn latency_uses_tokio_time() {
    let fake = FakeCoordinator::new();
    fake.set_latency(Duration::from_secs(5));
    let start = Instant::now();
    fake.register_stream(&request("p/+/a"), b"").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    // A held call's latency starts when it is released.
    fake.hold_next(1);
    let call = {
        let fake = fake.clone();
        tokio::spawn(async move { fake.register_stream(&request("p/+/b"), b"").await })
    };
    fake.wait_for_held(1).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let released_at = Instant::now();
    fake.release_all();
    call.await.unwrap().unwrap();
    assert_eq!(released_at.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn with_streams_keeps_server_like_state() {
    let fake = FakeCoordinator::with_streams();
    let a = request("p/+/a");
    let first = fake.register_stream(&a, b"").await.unwrap();
    // Idempotent: the stored state, whatever the new request says.
    let again = fake
        .register_stream(&a.clone().with_terminal_index(MessageIndex::from(9)), b"")
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(again.terminal_index, None);
    assert_eq!(FakeCoordinator::serial_of(&again), Some(1));

    let mut wrong_secret = a.clone();
    wrong_secret.secret = PrefixSecret::from([1; 36]);
    let e = fake.register_stream(&wrong_secret, b"").await.unwrap_err();
    assert_eq!(
        (e.code(), e.field()),
        (Code::InvalidArgument, Some("secret"))
    );

    // Terminate: unknown stream, wrong ID, wrong secret.
    let unknown = LogStreamState::from_request(
        &request("p/+/zz"),
        StreamId::for_path(&request("p/+/zz").path),
    );
    assert_eq!(
        fake.terminate_stream(&terminate(&unknown, 1))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let mut wrong_id = terminate(&first, 1);
    wrong_id.id = "abc".parse().unwrap();
    assert_eq!(
        fake.terminate_stream(&wrong_id).await.unwrap_err().code(),
        Code::NotFound
    );
    let mut bad = terminate(&first, 1);
    bad.secret = PrefixSecret::from([1; 36]);
    assert_eq!(
        fake.terminate_stream(&bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Records the index; the same index again is fine; a different one conflicts.
    fake.terminate_stream(&terminate(&first, 7)).await.unwrap();
    fake.terminate_stream(&terminate(&first, 7)).await.unwrap();
    let e = fake
        .terminate_stream(&terminate(&first, 8))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let stored = fake.stream(&a.project, &a.path).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(7)));
    assert_eq!(
        fake.register_stream(&a, b"").await.unwrap().terminal_index,
        Some(MessageIndex::from(7))
    );

    // A pre-seeded stream is answered as stored.
    let b = request("p/+/b");
    let mut seeded = LogStreamState::from_request(&b, StreamId::for_path(&b.path));
    seeded.archived = true;
    fake.insert_stream(seeded);
    assert!(fake.register_stream(&b, b"").await.unwrap().archived);
}

#[tokio::test]
async fn stateless_fake_answers_each_call_afresh() {
    let fake = FakeCoordinator::new();
    let a = request("p/+/a");
    let one = fake.register_stream(&a, b"").await.unwrap();
    let two = fake.register_stream(&a, b"").await.unwrap();
    assert!(!Arc::ptr_eq(&one, &two));
    assert_eq!(FakeCoordinator::serial_of(&two), Some(2));
    // Terminate always succeeds, even at conflicting indexes.
    fake.terminate_stream(&terminate(&one, 1)).await.unwrap();
    fake.terminate_stream(&terminate(&one, 2)).await.unwrap();
    assert!(fake.stream(&a.project, &a.path).is_none());
}

#[tokio::test]
async fn mock_coordinator_checks_expectations() {
    let mut mock = MockCoordinator::new();
    let mut seq = mockall::Sequence::new();
    mock.expect_register_stream()
        .withf(|req, desc| req.path.as_str() == "p/+/a" && desc == b"d")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(Error::unavailable("first")));
    mock.expect_register_stream()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|req, _| {
            Ok(Arc::new(LogStreamState::from_request(
                req,
                StreamId::for_path(&req.path),
            )))
        });
    mock.expect_terminate_stream()
        .withf(|req| req.terminal_index == MessageIndex::from(3))
        .times(1)
        .returning(|_| Ok(()));

    let coordinator: Arc<dyn Coordinator> = Arc::new(mock);
    let a = request("p/+/a");
    assert!(
        coordinator
            .register_stream(&a, b"d")
            .await
            .unwrap_err()
            .is_transient()
    );
    let state = coordinator.register_stream(&a, b"d").await.unwrap();
    coordinator
        .terminate_stream(&terminate(&state, 3))
        .await
        .unwrap();
}

#[test]
#[should_panic]
fn mock_coordinator_rejects_unexpected_calls() {
    let mock = MockCoordinator::new();
    let _ = futures_lite_block_on(mock.terminate_stream(&terminate(
        &LogStreamState::from_request(&request("p/+/a"), "id".parse().unwrap()),
        1,
    )));
}

/// Polls a future that is ready at once (a mock's answer).
fn futures_lite_block_on<F: std::future::Future + Unpin>(mut f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    match std::pin::Pin::new(&mut f).poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("mock answers are ready at once"),
    }
}
