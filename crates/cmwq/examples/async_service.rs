//! A tokio service that hands its CPU-heavy and blocking work to cmwq and awaits it.
//!
//! tokio is for waiting on many sockets and timers at once; its worker threads must not be
//! held by long computations or blocking calls. cmwq's handles are futures, so a request
//! handler can queue work on cmwq and `.await` it without blocking the runtime:
//! [`WorkHandle`](cmwq::WorkHandle) is a `Future`, and `Work::flush_async`,
//! `DelayedWork::flush_async`, `cancel_sync_async`, `Workqueue::flush_async` and
//! `drain_async` are the awaitable forms of the blocking waits.
//!
//! ```sh
//! cargo run -p cmwq --example async_service
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmwq::{DelayedWork, Work, Workqueue, WqFlags};

/// CPU work that would stall a tokio worker thread: a naive Fibonacci.
fn fib(n: u32) -> u64 {
    if n < 2 {
        n.into()
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

async fn service() -> Result<(), Box<dyn std::error::Error>> {
    // Requests: each tokio task offloads its computation to cmwq and awaits the result.
    let requests: Vec<_> = (20..28)
        .map(|n| tokio::spawn(async move { cmwq::spawn(move || fib(n)).await }))
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await??);
    }
    println!("8 requests answered on cmwq workers: {answers:?}");
    assert_eq!(answers[0], 6765);

    // A cmwq future composes with tokio's: a deadline on a piece of work.
    let slow = cmwq::spawn(|| fib(30));
    let answer = tokio::time::timeout(Duration::from_secs(60), slow).await??;
    println!("fib(30) = {answer}, well within its deadline");

    // A statistics item: queueing it while it is pending coalesces, so a burst of 1000
    // hits is published by one run. To make that visible here, the item waits on an ordered
    // queue behind a gate item that holds the queue until the burst is over.
    let stats_wq = Workqueue::ordered("service_stats", WqFlags::empty())?;
    let (open, gate_rx) = channel::<()>();
    let gate_rx = Mutex::new(gate_rx);
    let gate = Work::new(move |_| {
        cmwq::blocking(|| gate_rx.lock().unwrap().recv().ok());
    });
    let hits = Arc::new(AtomicU64::new(0));
    let published = Arc::new(Mutex::new(Vec::new()));
    let publish = {
        let (hits, published) = (hits.clone(), published.clone());
        Work::new(move |_| published.lock().unwrap().push(hits.load(Ordering::Relaxed)))
    };
    stats_wq.queue(&gate);
    let mut newly_queued = 0;
    for _ in 0..1000 {
        hits.fetch_add(1, Ordering::Relaxed);
        newly_queued += usize::from(stats_wq.queue(&publish));
    }
    open.send(())?;
    // flush_async waits for that run without blocking the runtime's thread (it may already
    // have finished: then there is nothing to wait for).
    publish.flush_async().await;
    println!(
        "1000 hits: queue() returned true {newly_queued} time, one run published {:?}",
        published.lock().unwrap()
    );
    assert_eq!(
        (newly_queued, published.lock().unwrap().clone()),
        (1, vec![1000])
    );
    stats_wq.destroy();

    let wq = Workqueue::new("service", WqFlags::UNBOUND, 0)?;

    // A cache expiry armed for a minute; shutting down fires it now and awaits it.
    let expired = Arc::new(AtomicU64::new(0));
    let expiry = {
        let expired = expired.clone();
        DelayedWork::new(move |_| {
            expired.fetch_add(1, Ordering::Relaxed);
        })
    };
    wq.queue_delayed(&expiry, Duration::from_secs(60));
    assert!(expiry.flush_async().await, "the expiry was pending");
    assert_eq!(expired.load(Ordering::Relaxed), 1);
    println!("cache expiry due in 60s ran at shutdown (flush_async fired its timer)");

    // A heartbeat that re-arms itself every 10 ms. Its beats are counted on a channel; the
    // blocking receive runs on a cmwq worker and is awaited, so the runtime never blocks.
    let (beat, beats) = channel::<()>();
    let heartbeat = DelayedWork::new(move |dw| {
        beat.send(()).ok();
        cmwq::schedule_delayed_work(dw, Duration::from_millis(10));
    });
    cmwq::schedule_delayed_work(&heartbeat, Duration::from_millis(10));
    cmwq::spawn(move || {
        for _ in 0..3 {
            beats.recv().expect("the heartbeat beats");
        }
    })
    .await?;
    // cancel_sync stops an item that re-arms itself, and waits for a run in progress.
    heartbeat.cancel_sync_async().await;
    assert!(!heartbeat.is_pending());
    println!("heartbeat beat 3 times, then cancel_sync_async stopped it");

    // Many items on the service queue; flush_async waits for all queued before it.
    let done = Arc::new(AtomicU64::new(0));
    let jobs: Vec<Work> = (0..100)
        .map(|_| {
            let done = done.clone();
            Work::new(move |_| {
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for job in &jobs {
        wq.queue(job);
    }
    wq.flush_async().await;
    assert_eq!(done.load(Ordering::Relaxed), 100);
    wq.drain_async().await;
    println!("100 jobs flushed, the queue drained: shutting down");
    wq.destroy();
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    runtime.block_on(service())
}
