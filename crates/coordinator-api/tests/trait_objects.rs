//! The trait is object-safe, its futures are `Send`, and the blanket impls forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, MessageIndex, RegisterRequest, StreamId,
    TerminateRequest,
};

#[derive(Default)]
struct Counting {
    registers: AtomicUsize,
    terminates: AtomicUsize,
}

impl Coordinator for Counting {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        _desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        CoordinatorFuture::new(async move {
            self.registers.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(Arc::new(LogStreamState::from_request(
                request,
                StreamId::for_path(&request.path),
            )))
        })
    }

    fn terminate_stream<'a>(
        &'a self,
        _request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        self.terminates.fetch_add(1, Ordering::SeqCst);
        CoordinatorFuture::ready(Ok(()))
    }
}

fn request() -> RegisterRequest {
    RegisterRequest::parse("proj", "pre/+/name", &[1; 36], None).unwrap()
}

async fn use_generic<C: Coordinator>(c: C) -> Arc<LogStreamState> {
    c.register_stream(&request(), b"d").await.unwrap()
}

#[tokio::test]
async fn dyn_arc_box_and_ref_forward() {
    let inner = Arc::new(Counting::default());
    let dynamic: Arc<dyn Coordinator> = inner.clone();
    let state = dynamic.register_stream(&request(), b"d").await.unwrap();
    assert_eq!(state.id, StreamId::for_path(&request().path));

    use_generic(&*inner).await;
    use_generic(inner.clone()).await;
    use_generic(Box::new(Counting::default())).await;
    let boxed: Box<dyn Coordinator> = Box::new(Counting::default());
    use_generic(boxed).await;
    assert_eq!(inner.registers.load(Ordering::SeqCst), 3);

    let t = TerminateRequest::for_state(&state, MessageIndex::from(4));
    dynamic.terminate_stream(&t).await.unwrap();
    assert_eq!(inner.terminates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn futures_are_send_and_spawnable() {
    let c: Arc<dyn Coordinator> = Arc::new(Counting::default());
    let handle = tokio::spawn(async move { c.register_stream(&request(), b"d").await });
    assert!(handle.await.unwrap().is_ok());
}
