//! Helpers of the `cmwq` tool tests: a private runtime directory, and a `cmwq demo --serve`
//! child that is always killed. Every wait has a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);
pub const CMWQ: &str = env!("CARGO_BIN_EXE_cmwq");

/// A private `XDG_RUNTIME_DIR`, removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "cmwq-cli-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cmwq demo --serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub banner: Vec<String>,
}

impl Server {
    /// Starts it and waits until its socket answers.
    pub fn start(rt: &TempDir) -> Server {
        let mut child = Command::new(CMWQ)
            .args(["demo", "--serve", "--seconds", "300"])
            .env("XDG_RUNTIME_DIR", rt.path())
            .env_remove("CMWQ_CONTROL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            pid,
            banner: Vec::new(),
        };
        let end = Instant::now() + DEADLINE;
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let done = line.contains("stops after");
                    server.banner.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => panic!("cmwq demo --serve never got going: {:?}", server.banner),
            }
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmwq ARGS` with the runtime directory, with a deadline.
pub fn cmwq(rt: &TempDir, args: &[&str]) -> Output {
    let mut child = Command::new(CMWQ)
        .args(args)
        .env("XDG_RUNTIME_DIR", rt.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("cmwq {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Stdout of a successful `cmwq ARGS`.
#[track_caller]
pub fn ok(rt: &TempDir, args: &[&str]) -> String {
    let out = cmwq(rt, args);
    assert!(
        out.status.success(),
        "cmwq {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
