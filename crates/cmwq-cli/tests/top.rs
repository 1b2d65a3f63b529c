//! `cmwq top` as a person uses it: in a real terminal (tmux, 160x50), reading the screen with
//! `capture-pane` and typing with `send-keys`. The screen must show the demo's workqueues and
//! pools, change between refreshes, re-sort on `s` and `r`, and `q` must quit (exit 0).
//!
//! Skipped, with the reason printed, where tmux is not installed (`apt-get install tmux`).

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Server, TempDir, CMWQ, DEADLINE};

const QUEUES: [&str; 7] = [
    "demo_events",
    "demo_unbound",
    "demo_blocking",
    "demo_hog",
    "demo_sysfs",
    "demo_reclaim",
    "demo_ordered",
];

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` in a detached 160x50 session, or `None` (after saying why) if tmux is
    /// not there.
    fn start(tag: &str, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            println!("skipped: tmux is not installed (apt-get install tmux)");
            return None;
        }
        let t = Tmux {
            socket: format!("cmwq-top-test-{}-{tag}", std::process::id()),
        };
        // The command's exit status stays on the screen after it ends.
        let script = format!("{command}; echo \"top exited with $?\"; sleep 60");
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-s",
            "top",
            "sh",
            "-c",
            &script,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        Some(t)
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.tmux(&["send-keys", "-t", "top", keys]);
        assert!(out.status.success(), "send-keys: {out:?}");
    }

    /// The screen once `cond` holds, within the deadline.
    #[track_caller]
    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(Instant::now() < end, "screen never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The number in the `total` column of `queue`'s row.
fn total_of(screen: &str, queue: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains(&format!("│{queue} ")))?;
    line.trim_matches('│')
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs the checks on a `top` session; `header` must appear in its title line.
fn check_top(t: &Tmux, header: &str) {
    let first = t.wait_for("the demo's workqueues", |s| {
        QUEUES.iter().all(|q| s.contains(q)) && s.contains(" pools ") && s.contains("sample 2")
    });
    assert!(first.contains(header), "{first}");
    for col in [
        "total/s", "infl", "CPUtime", "CPUitsv", "CMW/RPR", "mayday", "rescued",
    ] {
        assert!(first.contains(col), "column {col}:\n{first}");
    }
    for col in ["workers", "idle", "running", "queued"] {
        assert!(first.contains(col), "pool column {col}:\n{first}");
    }
    assert!(first.contains("unbound"), "the unbound pool:\n{first}");
    assert!(
        first.contains("sorted by total/s (largest first)"),
        "{first}"
    );
    println!("first screen:\n{first}");

    // It refreshes: the counters of a busy queue grow on screen.
    let before = total_of(&first, "demo_events").expect("a demo_events row");
    let later = t.wait_for("demo_events moving", |s| {
        total_of(s, "demo_events").is_some_and(|n| n > before)
    });
    assert_ne!(first, later);

    // Sorting: `s` moves to the next column, `r` reverses, `S` goes back.
    t.keys("s");
    t.wait_for("sorted by infl", |s| {
        s.contains("sorted by infl (largest first)")
    });
    t.keys("r");
    t.wait_for("reversed", |s| s.contains("sorted by infl (reversed)"));
    for _ in 0..3 {
        t.keys("S"); // infl -> total/s -> total -> workqueue
    }
    let by_name = t.wait_for("sorted by name", |s| {
        s.contains("sorted by workqueue (z-a)")
    });
    let rows: Vec<&str> = by_name
        .lines()
        .filter_map(|l| {
            QUEUES
                .iter()
                .find(|q| l.contains(&format!("│{q} ")))
                .copied()
        })
        .collect();
    let mut want = QUEUES.to_vec();
    want.sort_unstable();
    want.reverse();
    assert_eq!(rows, want, "{by_name}");

    // `q` quits, cleanly.
    t.keys("q");
    let end = t.wait_for("top exiting", |s| s.contains("top exited with"));
    assert!(end.contains("top exited with 0"), "{end}");
}

#[test]
fn top_shows_the_in_process_demo_and_quits_on_q() {
    let Some(t) = Tmux::start("local", &format!("{CMWQ} top")) else {
        return;
    };
    check_top(&t, "demo workload in this process");
}

#[test]
fn top_shows_another_process() {
    let rt = TempDir::new("top");
    let server = Server::start(&rt);
    let command = format!(
        "XDG_RUNTIME_DIR={} {CMWQ} top --pid {}",
        rt.path().display(),
        server.pid
    );
    let Some(t) = Tmux::start("remote", &command) else {
        return;
    };
    check_top(&t, &format!("pid {} (cmwq)", server.pid));
}
