//! A debounced autosave: every edit re-arms one delayed item with `mod_delayed`, so a burst
//! of edits ends in a single save, made once the editor has been quiet for the whole delay.
//!
//! The document embeds its save item (a `DelayedWorkField`), as a kernel driver embeds a
//! `delayed_work` in its device struct: no allocation per edit, and the item's identity is
//! what makes the edits coalesce.
//!
//! ```sh
//! cargo run -p cmwq --example autosave
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmwq::{DelayedWork, DelayedWorkField, DelayedWorkItem, Workqueue, WqFlags};

/// How long the editor must be quiet before the document is saved.
const QUIET: Duration = Duration::from_millis(300);

struct Document {
    /// The autosave item, embedded (the kernel's `struct delayed_work` in a struct).
    save: DelayedWorkField,
    text: Mutex<String>,
    path: PathBuf,
    saves: AtomicUsize,
    /// Tells `main` that a save happened (to wait for the debounce without guessing a sleep).
    saved: Sender<usize>,
}

impl DelayedWorkItem for Document {
    fn delayed_work_field(&self) -> &DelayedWorkField {
        &self.save
    }

    /// The save: runs on a worker of the `autosave` queue, never on the editor's thread.
    fn run(&self, _dw: &DelayedWork) {
        let text = self.text.lock().unwrap().clone();
        // A file write may sleep: say so, so concurrency management can start other items.
        cmwq::blocking(|| std::fs::write(&self.path, &text)).expect("write the autosave file");
        let n = self.saves.fetch_add(1, Ordering::Relaxed) + 1;
        self.saved.send(n).ok();
    }
}

/// Types `n` characters, re-arming the autosave after each one; returns how many
/// `mod_delayed` calls found the save already pending (re-armed it) rather than idle.
fn type_burst(wq: &Workqueue, doc: &Document, save: &DelayedWork, n: usize) -> usize {
    let mut rearmed = 0;
    for i in 0..n {
        doc.text
            .lock()
            .unwrap()
            .push(char::from(b'a' + (i % 26) as u8));
        // `true`: the save was pending and now waits QUIET from this edit (the kernel's
        // mod_delayed_work). `false`: it was idle and is now armed.
        if wq.mod_delayed(save, QUIET) {
            rearmed += 1;
        }
    }
    rearmed
}

fn main() -> Result<(), cmwq::Error> {
    let wq = Workqueue::new("autosave", WqFlags::UNBOUND, 0)?;
    let (tx, saved): (Sender<usize>, Receiver<usize>) = channel();
    let path = std::env::temp_dir().join(format!("cmwq-autosave-{}.txt", std::process::id()));
    let doc = Arc::new(Document {
        save: DelayedWorkField::new(),
        text: Mutex::new(String::new()),
        path: path.clone(),
        saves: AtomicUsize::new(0),
        saved: tx,
    });
    let save = DelayedWork::from_arc(doc.clone());

    // A burst of typing: 1000 edits in a few milliseconds, far inside the quiet period.
    let rearmed = type_burst(&wq, &doc, &save, 1000);
    println!("typed 1000 characters: the save was armed once and re-armed {rearmed} times");
    assert_eq!(rearmed, 999);

    // Wait for the debounced save itself (it fires QUIET after the last edit).
    let n = saved.recv().expect("the save runs");
    let on_disk = std::fs::read_to_string(&path).expect("read the autosave file");
    println!(
        "quiet for {QUIET:?}: saved {n} time, {} bytes on disk",
        on_disk.len()
    );
    assert_eq!((n, on_disk.len()), (1, 1000));

    // More typing, then the editor closes: flush fires the pending save now and waits for it.
    type_burst(&wq, &doc, &save, 50);
    assert!(save.flush(), "a save was pending");
    let on_disk = std::fs::read_to_string(&path).expect("read the autosave file");
    println!(
        "closed after 50 more: flush saved at once ({} saves in all, {} bytes on disk)",
        doc.saves.load(Ordering::Relaxed),
        on_disk.len()
    );
    assert_eq!(doc.saves.load(Ordering::Relaxed), 2);
    assert_eq!(on_disk, *doc.text.lock().unwrap());

    save.cancel_sync();
    wq.destroy();
    std::fs::remove_file(&path).ok();
    Ok(())
}
