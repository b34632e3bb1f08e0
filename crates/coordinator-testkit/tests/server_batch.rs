//! The fake server's `Batch` RPC through a real tonic client: per-entry answers
//! with indexes, per-entry errors with transient flags, concurrent processing,
//! response order, and the batch fault knobs.

use std::time::Duration;

use coordinator_api::StreamId;
use coordinator_api::{Code as LocalCode, MessageIndex};
use coordinator_grpc::proto::logdog::batch_request::entry::Value as Req;
use coordinator_grpc::proto::logdog::batch_response::entry::Value as Resp;
use coordinator_grpc::proto::logdog::{
    ArchiveStreamRequest, BatchRequest, BatchResponse, LoadStreamRequest, batch_request,
};
use coordinator_testkit::{BatchOrder, register_request, terminate_request};
use tonic::Code;

mod common;

use common::{Fixture, fixture, path};

impl Fixture {
    fn register(&self, p: &str) -> batch_request::Entry {
        entry(Req::RegisterStream(register_request(
            &self.project,
            &path(p),
            &self.secret,
            None,
        )))
    }

    fn terminate(&self, p: &str, index: u32) -> batch_request::Entry {
        entry(Req::TerminateStream(terminate_request(
            &self.project,
            &path(p),
            &self.secret,
            MessageIndex::from(index),
        )))
    }

    /// `n` register entries for streams `pre/+/{tag}{i}`.
    fn registers(&self, tag: &str, n: usize) -> Vec<batch_request::Entry> {
        (0..n)
            .map(|i| self.register(&format!("pre/+/{tag}{i}")))
            .collect()
    }

    async fn batch(&mut self, entries: Vec<batch_request::Entry>) -> BatchResponse {
        self.client
            .batch(BatchRequest { req: entries })
            .await
            .unwrap()
            .into_inner()
    }

    fn stored(&self, p: &str) -> bool {
        self.server.stream(&self.project, &path(p)).is_some()
    }
}

fn entry(value: Req) -> batch_request::Entry {
    batch_request::Entry { value: Some(value) }
}

fn indexes(resp: &BatchResponse) -> Vec<i32> {
    resp.resp.iter().map(|e| e.index).collect()
}

/// The per-entry error of response entry `i`: (code, transient).
fn entry_err(resp: &BatchResponse, i: usize) -> (Code, bool) {
    match &resp.resp[i].value {
        Some(Resp::Err(e)) => (Code::from_i32(e.grpc_code), e.transient),
        other => panic!("entry {i} is not an error: {other:?}"),
    }
}

#[tokio::test]
async fn each_entry_is_answered_with_its_index() {
    let mut f = fixture().await;
    // A stream to terminate and load, registered before the batch (entries of
    // one batch run concurrently, so they must not depend on each other).
    f.batch(vec![f.register("pre/+/old")]).await;

    let req = vec![
        f.register("pre/+/new"),
        entry(Req::RegisterStream(register_request(
            &f.project,
            &path("unknown/+/s"),
            &f.secret,
            None,
        ))),
        f.terminate("pre/+/old", 5),
        f.terminate("pre/+/missing", 5),
        entry(Req::LoadStream(LoadStreamRequest {
            project: "proj".into(),
            id: StreamId::for_path(&path("pre/+/old")).as_str().into(),
            desc: false,
        })),
        entry(Req::ArchiveStream(ArchiveStreamRequest::default())),
        batch_request::Entry { value: None },
    ];
    let resp = f.batch(req).await;
    assert_eq!(indexes(&resp), [0, 1, 2, 3, 4, 5, 6]);

    match &resp.resp[0].value {
        Some(Resp::RegisterStream(r)) => {
            assert_eq!(r.id, StreamId::for_path(&path("pre/+/new")).as_str());
            assert_eq!(r.state.as_ref().unwrap().terminal_index, -1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(entry_err(&resp, 1), (Code::FailedPrecondition, false));
    // A successful terminate entry: its index and no value.
    assert_eq!(resp.resp[2].value, None);
    assert_eq!(entry_err(&resp, 3), (Code::NotFound, false));
    match &resp.resp[4].value {
        // Entries run concurrently, so the load may see the stream before or
        // after entry 2 terminated it.
        Some(Resp::LoadStream(l)) => {
            assert!([-1, 5].contains(&l.state.as_ref().unwrap().terminal_index))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(entry_err(&resp, 5), (Code::Unimplemented, false));
    assert_eq!(entry_err(&resp, 6), (Code::InvalidArgument, false));
    match &resp.resp[1].value {
        Some(Resp::Err(e)) => assert!(e.msg.contains("not registered"), "{e:?}"),
        _ => unreachable!(),
    }

    assert!(f.stored("pre/+/new"));
    assert_eq!(
        f.server
            .stream(&f.project, &path("pre/+/old"))
            .unwrap()
            .terminal_index,
        Some(MessageIndex::from(5))
    );
    let calls = f.server.calls();
    assert_eq!(calls.batch, 2);
    assert_eq!(calls.batch_entries, 8);
    assert_eq!(calls.batch_register_entries, 3);
    assert_eq!(calls.batch_terminate_entries, 2);
    assert_eq!(calls.register, 0, "batch entries are not counted as RPCs");
}

#[tokio::test]
async fn entries_are_processed_concurrently() {
    let mut f = fixture().await;
    f.server.faults().hold();
    let req = f.registers("c", 8);
    let mut client = f.client.clone();
    let call = tokio::spawn(async move { client.batch(BatchRequest { req }).await });

    // All eight entries are in flight at the same time: only possible if the
    // server does not process them one after the other (which would hang here;
    // the timeout turns that into a failure).
    tokio::time::timeout(Duration::from_secs(30), f.server.faults().wait_held(8))
        .await
        .expect("the batch's entries were not all in flight at once");
    assert_eq!(f.server.faults().held(), 8);
    assert!(f.server.streams().is_empty());
    f.server.faults().release();

    let resp = call.await.unwrap().unwrap().into_inner();
    assert_eq!(indexes(&resp), (0..8).collect::<Vec<_>>());
    assert_eq!(f.server.streams().len(), 8);
    assert_eq!(f.server.faults().held(), 0);
    // Released: later batches are not held.
    f.batch(f.registers("d", 2)).await;
}

#[tokio::test]
async fn injected_entry_errors_carry_transient_flags() {
    let mut f = fixture().await;
    f.server
        .faults()
        .fail_next_batch_entries(2, LocalCode::Unavailable);
    let resp = f.batch(f.registers("a", 3)).await;
    assert_eq!(entry_err(&resp, 0), (Code::Unavailable, true));
    assert_eq!(entry_err(&resp, 1), (Code::Unavailable, true));
    assert!(matches!(resp.resp[2].value, Some(Resp::RegisterStream(_))));
    // Failed entries were not processed.
    assert!(!f.stored("pre/+/a0") && !f.stored("pre/+/a1") && f.stored("pre/+/a2"));

    f.server
        .faults()
        .fail_next_batch_entries(1, LocalCode::PermissionDenied);
    let resp = f.batch(f.registers("b", 1)).await;
    assert_eq!(entry_err(&resp, 0), (Code::PermissionDenied, false));

    f.server
        .faults()
        .fail_next_batch_entries_flagged(1, LocalCode::FailedPrecondition, true);
    let resp = f.batch(f.registers("c", 2)).await;
    assert_eq!(entry_err(&resp, 0), (Code::FailedPrecondition, true));
    assert!(matches!(resp.resp[1].value, Some(Resp::RegisterStream(_))));
}

#[tokio::test]
async fn semantic_entry_errors_are_permanent_per_the_code_table() {
    let mut f = fixture().await;
    f.batch(vec![f.register("pre/+/s"), f.terminate("pre/+/t", 0)])
        .await;
    let resp = f
        .batch(vec![
            f.terminate("pre/+/s", 1),
            entry(Req::TerminateStream(
                coordinator_grpc::proto::logdog::TerminateStreamRequest {
                    terminal_index: -1,
                    ..terminate_request(&f.project, &path("pre/+/s"), &f.secret, MessageIndex::ZERO)
                },
            )),
        ])
        .await;
    assert_eq!(resp.resp[0].value, None);
    assert_eq!(entry_err(&resp, 1), (Code::InvalidArgument, false));
    let resp = f.batch(vec![f.terminate("pre/+/s", 2)]).await;
    assert_eq!(entry_err(&resp, 0), (Code::FailedPrecondition, false));
}

#[tokio::test]
async fn response_order_knob() {
    let mut f = fixture().await;
    f.server.faults().set_batch_order(BatchOrder::Reversed);
    let resp = f.batch(f.registers("r", 5)).await;
    assert_eq!(indexes(&resp), [4, 3, 2, 1, 0]);
    // Each answer still belongs to its index.
    for e in &resp.resp {
        match &e.value {
            Some(Resp::RegisterStream(r)) => assert_eq!(
                r.id,
                StreamId::for_path(&path(&format!("pre/+/r{}", e.index))).as_str()
            ),
            other => panic!("{other:?}"),
        }
    }

    f.server
        .faults()
        .set_batch_order(BatchOrder::Shuffled { seed: 42 });
    let shuffled = indexes(&f.batch(f.registers("s", 20)).await);
    let mut sorted = shuffled.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    assert_ne!(shuffled, sorted);

    // The same seed on another server gives the same permutation.
    let mut g = fixture().await;
    g.server
        .faults()
        .set_batch_order(BatchOrder::Shuffled { seed: 42 });
    assert_eq!(indexes(&g.batch(g.registers("s", 20)).await), shuffled);

    f.server.faults().set_batch_order(BatchOrder::Request);
    assert_eq!(indexes(&f.batch(f.registers("q", 3)).await), [0, 1, 2]);
}

#[tokio::test]
async fn dropped_entries_are_processed_but_not_answered() {
    let mut f = fixture().await;
    f.server.faults().drop_next_batch_entries(3);
    let resp = f.batch(f.registers("a", 2)).await;
    assert!(resp.resp.is_empty());
    let resp = f.batch(f.registers("b", 3)).await;
    assert_eq!(indexes(&resp), [1, 2], "the count carries over batches");
    for p in ["pre/+/a0", "pre/+/a1", "pre/+/b0", "pre/+/b1", "pre/+/b2"] {
        assert!(f.stored(p), "{p}");
    }
    assert_eq!(indexes(&f.batch(f.registers("c", 2)).await), [0, 1]);

    f.server.faults().drop_batch_entries_where(|i| i % 2 == 1);
    assert_eq!(indexes(&f.batch(f.registers("d", 5)).await), [0, 2, 4]);
    assert_eq!(
        indexes(&f.batch(f.registers("e", 2)).await),
        [0],
        "persistent"
    );
    assert!(f.stored("pre/+/d3"));
    f.server.faults().clear();
    assert_eq!(indexes(&f.batch(f.registers("f", 2)).await), [0, 1]);
}

#[tokio::test]
async fn empty_batches_knob() {
    let mut f = fixture().await;
    f.server.faults().empty_next_batches(2);
    assert!(f.batch(f.registers("a", 3)).await.resp.is_empty());
    assert!(f.batch(f.registers("b", 1)).await.resp.is_empty());
    assert_eq!(indexes(&f.batch(f.registers("c", 2)).await), [0, 1]);
    assert!(
        f.stored("pre/+/a2") && f.stored("pre/+/b0"),
        "entries are still processed"
    );
}

#[tokio::test]
async fn a_failed_batch_processes_no_entry() {
    let mut f = fixture().await;
    f.server.faults().fail_next_rpc(
        coordinator_testkit::RpcKind::Batch,
        1,
        LocalCode::Unavailable,
    );
    let status = f
        .client
        .batch(BatchRequest {
            req: f.registers("a", 2),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(f.server.streams().is_empty());
    let calls = f.server.calls();
    assert_eq!((calls.batch, calls.batch_entries), (1, 2));
    assert_eq!(indexes(&f.batch(f.registers("a", 2)).await), [0, 1]);
}

#[tokio::test]
async fn an_empty_batch_gets_an_empty_answer() {
    let mut f = fixture().await;
    assert!(f.batch(Vec::new()).await.resp.is_empty());
    assert_eq!(f.server.calls().batch, 1);
}
