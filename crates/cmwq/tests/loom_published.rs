//! Loom model of the published pwq table (`src/os/published.rs`, which `apply_attrs`
//! replaces and `select_pwq` reads with one Acquire load).
//!
//! The file itself is compiled here against loom's atomics. The value carries an atomic
//! written Relaxed before it is published: a reader that finds the new value must see that
//! write (it would not if `publish` stored Relaxed or `get` loaded Relaxed), and a reader
//! never finds an older value after a newer one. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg cmwq_loom" cargo test -p cmwq --release --test loom_published
//! ```
#![cfg(cmwq_loom)]

#[allow(dead_code)]
mod os {
    pub mod sync {
        pub mod atomic {
            pub use loom::sync::atomic::{AtomicPtr, Ordering};
        }
    }
}

#[allow(dead_code)]
#[path = "../src/os/published.rs"]
mod published;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use published::Published;

/// A stand-in for the table: `generation` is its place in the publish order, `written` what
/// its maker stored (Relaxed) before publishing it.
struct Table {
    generation: usize,
    written: AtomicUsize,
}

fn table(generation: usize) -> Table {
    let t = Table {
        generation,
        written: AtomicUsize::new(0),
    };
    t.written.store(generation, Ordering::Relaxed);
    t
}

#[test]
fn a_reader_sees_what_was_written_before_the_publish_and_never_goes_back() {
    loom::model(|| {
        let p = Arc::new(Published::new(table(1)));
        let writer = {
            let p = p.clone();
            thread::spawn(move || {
                p.publish(table(2));
                p.publish(table(3));
            })
        };
        let mut last = 0;
        for _ in 0..2 {
            let t = p.get();
            assert_eq!(t.written.load(Ordering::Relaxed), t.generation);
            assert!(
                t.generation >= last,
                "went back from {last} to {}",
                t.generation
            );
            last = t.generation;
        }
        writer.join().unwrap();
        assert_eq!(p.get().generation, 3);
    });
}
