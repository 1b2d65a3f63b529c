//! A two-stage pipeline: read files on a per-CPU workqueue, hash them on the unbound one.
//!
//! Reading may wait for the disk: each read is wrapped in [`cmwq::blocking`], so while one
//! worker waits, concurrency management starts the next read on another worker of the same
//! CPU (without the hint, the pool's one running worker would hold the others back until
//! the monitor noticed the sleep). Hashing is CPU work: each read hands its bytes to [`cmwq::spawn`], which queues on
//! the unbound `system_dfl_wq` and so spreads the hashing over every CPU.
//!
//! The files are this crate's own sources, so the example needs nothing but itself. The
//! digest is checked against a sequential pass.
//!
//! ```sh
//! cargo run -p cmwq --example hash_files
//! ```

use std::io;
use std::path::{Path, PathBuf};

use cmwq::{WorkHandle, Workqueue, WqFlags};

/// 64-bit FNV-1a: tiny, dependency-free, and the same on every run and platform.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Every `.rs` and `.md` file under `dir`, sorted, so the digest does not depend on the order
/// the directory lists them in.
fn sources(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "md")) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// What the read stage hands back: the file's size and the handle of its hashing job.
type Read = io::Result<(usize, WorkHandle<u64>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&root)?;

    // Per-CPU (WqFlags::empty(), as in the kernel): items queued from this thread run on its
    // CPU's pool, one at a time unless one of them blocks. The blocking hint is what lets the
    // reads overlap.
    let readers = Workqueue::new("hash_read", WqFlags::empty(), 0)?;
    let reads: Vec<WorkHandle<Read>> = files
        .iter()
        .map(|path| {
            let path = path.clone();
            readers.spawn(move || {
                let bytes = cmwq::blocking(|| std::fs::read(&path))?;
                let len = bytes.len();
                Ok((len, cmwq::spawn(move || fnv1a(&bytes))))
            })
        })
        .collect();

    // Join in file order: the digest folds the per-file hashes in a fixed order.
    let (mut total, mut digest) = (0usize, 0u64);
    for read in reads {
        let (len, hash) = read.join()??;
        total += len;
        digest = fnv1a(&[digest.to_le_bytes(), hash.join()?.to_le_bytes()].concat());
    }
    println!(
        "hashed {} files of crates/cmwq/src, {total} bytes",
        files.len()
    );
    println!("digest {digest:016x}");

    let mut sequential = 0u64;
    for path in &files {
        let hash = fnv1a(&std::fs::read(path)?);
        sequential = fnv1a(&[sequential.to_le_bytes(), hash.to_le_bytes()].concat());
    }
    assert_eq!(digest, sequential);
    println!("same digest as a sequential pass");

    readers.destroy();
    Ok(())
}
