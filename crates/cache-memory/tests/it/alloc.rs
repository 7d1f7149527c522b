//! What an L1 hit costs in allocations: a hit through [`Cache::get_or_load_named`] allocates
//! nothing, which is the point of probing by a [`KeyName`](cache_core::KeyName) on the stack.
//! `allocation-counter` (linked into this test binary only) counts the allocations of the
//! calling thread.

use std::{
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use cache_core::{Cache, Namespace, TtlPolicy};
use cache_memory::MemoryBackend;

/// Allocations made on this thread by one poll of `future`, which must finish in that poll
/// (as a hit from memory does: it awaits nothing).
fn allocations_of<T>(future: impl Future<Output = T>) -> (T, u64) {
    let mut future = pin!(future);
    let mut output = None;
    let info = allocation_counter::measure(|| {
        if let Poll::Ready(value) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            output = Some(value);
        }
    });
    (
        output.expect("the lookup finished without awaiting"),
        info.count_total,
    )
}

#[tokio::test]
async fn a_hit_by_key_name_allocates_nothing() {
    let backend = Arc::new(MemoryBackend::default());
    let cache = Cache::new(Arc::clone(&backend) as _);
    let ns = Namespace::new("alloc", 1).unwrap();
    let policy = TtlPolicy::new(Duration::from_secs(60));
    let channel = 42_u64;
    let lookup = || async {
        let name = ns.key_name("page", &[&channel, &50]);
        cache
            .get_or_load_named(
                &name,
                || name.tagged(&[ns.tag("channel", &[&channel])]),
                &policy,
                |_| true,
                || async { Ok::<_, std::io::Error>(Arc::new("a page".to_owned())) },
            )
            .await
            .unwrap()
    };
    assert_eq!(*lookup().await, "a page", "the miss loads");
    // The loader's task answers before it writes the cache: wait for the write.
    while cache.loads_in_flight() > 0 {
        tokio::task::yield_now().await;
    }
    // moka applies an insert to its bookkeeping later, and sets up state of its own on the first
    // reads of a map: one-time costs of the insert and of the process, not of a hit.
    backend.run_pending_tasks().await;
    let _ = lookup().await;
    for other in 0..3 {
        // An invalidation of another tag makes the hit check the entry's tags again.
        cache
            .invalidate(&[ns.tag("channel", &[&other])])
            .await
            .unwrap();
        let (page, allocations) = allocations_of(lookup());
        assert_eq!(*page, "a page");
        assert_eq!(allocations, 0, "a hit allocated");
        let (page, allocations) = allocations_of(lookup());
        assert_eq!(*page, "a page");
        assert_eq!(allocations, 0, "a hit allocated");
    }
    assert_eq!(cache.stats().loads.loads, 1, "every later lookup was a hit");

    // The same hit through a built `Key` allocates: the counter sees what a hit costs.
    let (page, allocations) = allocations_of(async {
        let key = ns.tagged_key("page", &[&channel, &50], &[ns.tag("channel", &[&channel])]);
        cache
            .get_or_load(&key, &policy, || async {
                Ok::<_, std::io::Error>(Arc::new(String::new()))
            })
            .await
            .unwrap()
    });
    assert_eq!(*page, "a page");
    assert!(allocations > 0);
}
