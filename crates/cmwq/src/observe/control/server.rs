//! The endpoint: a listening socket, a thread that accepts, and one short-lived thread per
//! connection.
//!
//! Nothing here runs on the engine's threads or holds an engine lock while it reads or writes
//! a socket: a reply is computed whole (each statistic under its pool's lock, taken and
//! released in turn) and only then sent. A connection that says nothing is closed after
//! [`IDLE_TIMEOUT`]; at most [`MAX_CLIENTS`] are served at once, and one more is told so and
//! closed. No I/O failure of a client can panic a server thread.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::observe::control::path::{self, SOCKET_MODE};
use crate::observe::control::protocol::{answer_bytes, error_reply, MAX_REQUEST};
use crate::Error;

/// A connection that sends no complete request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply the client does not read within this long ends its connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are refused with an error reply.
pub const MAX_CLIENTS: usize = 16;

/// A running endpoint (see [`serve`]). Dropping it stops accepting, waits for the accepting
/// thread, and removes the socket; connections being served finish on their own (within
/// [`IDLE_TIMEOUT`]).
#[derive(Debug)]
#[must_use = "the endpoint stops when its handle is dropped"]
pub struct ControlHandle {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Wakes the accepting thread out of `poll`.
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl ControlHandle {
    /// The socket's path (`<socket_dir()>/<pid>.sock`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = (&self.wake).write_all(b"x");
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        live_sockets().lock().retain(|p| p != &self.path);
    }
}

/// The sockets this process serves, removed by [`remove_at_exit`] if the process exits with
/// their handles alive (statics are not dropped).
fn live_sockets() -> &'static Mutex<Vec<PathBuf>> {
    static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    &LIVE
}

/// Registered with `atexit`: removes the sockets still served at `exit` (after `main`
/// returns or `std::process::exit`). A killed process cannot, and leaves a stale socket
/// that the next endpoint of its user removes.
extern "C" fn remove_at_exit() {
    // try_lock: another thread may hold it while the process exits under it.
    if let Some(live) = live_sockets().try_lock() {
        for p in live.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn control_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Control {
        reason: format!("{what}: {e}"),
    }
}

/// Starts this process's control endpoint: a Unix stream socket at
/// [`socket_path`](super::socket_path)`(pid)` in a directory of mode 0700, the socket of mode
/// 0600, accepting only peers of this process's effective uid, answering the protocol of
/// the [module docs](super) on a thread of its own.
///
/// A stale socket at that path (left by a dead process that had this pid, nothing listening)
/// is replaced, and those of other dead processes are removed; a live endpoint is never
/// taken over: if this process already serves one (by an earlier `serve`, or by
/// `CMWQ_CONTROL=1`), this returns [`Error::Control`].
///
/// The socket is removed when the handle drops, and at process exit if the handle is still
/// alive then.
pub fn serve() -> Result<ControlHandle, Error> {
    let dir = path::socket_dir();
    let path = path::socket_path(std::process::id());
    path::prepare_dir(&dir)?;
    // Holding the list across the bind keeps two `serve` calls of this process apart.
    let mut live = live_sockets().lock();
    if live.contains(&path) {
        return Err(Error::Control {
            reason: format!("this process already serves {}", path.display()),
        });
    }
    path::sweep_stale(&dir);
    if std::fs::symlink_metadata(&path).is_ok() {
        if path::is_listening(&path) {
            return Err(Error::Control {
                reason: format!("{} is in use by a live endpoint", path.display()),
            });
        }
        // Left by a dead process that had our pid.
        std::fs::remove_file(&path)
            .map_err(|e| control_error(&format!("cannot remove stale {}", path.display()), e))?;
    }
    // The directory is 0700: nobody else can reach the socket between bind and chmod.
    let listener = UnixListener::bind(&path)
        .map_err(|e| control_error(&format!("cannot bind {}", path.display()), e))?;
    let setup = || -> io::Result<(UnixStream, UnixStream)> {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        listener.set_nonblocking(true)?;
        UnixStream::pair()
    };
    let (wake, wake_rx) = match setup() {
        Ok(pair) => pair,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(control_error("cannot set up the endpoint", e));
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("cmwq-control".into())
        .spawn(move || accept_loop(&listener, &wake_rx, &stop2));
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(control_error("cannot start the endpoint thread", e));
        }
    };
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: `remove_at_exit` is an `extern "C" fn()` that lives for the whole program
        // and neither unwinds nor calls `exit`.
        unsafe {
            libc::atexit(remove_at_exit);
        }
    });
    live.push(path.clone());
    Ok(ControlHandle {
        path,
        stop,
        wake,
        thread: Some(thread),
    })
}

/// Starts the endpoint at the engine's first use when `CMWQ_CONTROL=1`, and keeps it for the
/// life of the process. A failure is reported on standard error (the operator asked for the
/// endpoint) and as a `tracing` warning; the engine goes on without it.
pub(crate) fn start_from_env() {
    static HANDLE: OnceLock<ControlHandle> = OnceLock::new();
    if std::env::var_os("CMWQ_CONTROL").is_none_or(|v| v != "1") {
        return;
    }
    // The program called `serve()` itself before its first use of the engine: done.
    if live_sockets()
        .lock()
        .contains(&path::socket_path(std::process::id()))
    {
        return;
    }
    match serve() {
        Ok(h) => {
            let _ = HANDLE.set(h);
        }
        Err(e) => {
            eprintln!("cmwq: CMWQ_CONTROL=1, but the control endpoint did not start: {e}");
            tracing::warn!(target: "cmwq", "control endpoint did not start: {e}");
        }
    }
}

/// Waits until `listener` or `wake` is readable (or a signal interrupts).
fn wait_readable(listener: &UnixListener, wake: &UnixStream) {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two `pollfd`s for the duration of the call, and its
    // length is passed with it; both descriptors stay open (borrowed) across the call.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1);
    }
}

fn accept_loop(listener: &UnixListener, wake: &UnixStream, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        wait_readable(listener, wake);
        if stop.load(Ordering::Acquire) {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => admit(stream, &active),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Out of descriptors or memory: back off rather than spin.
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
}

/// The effective uid of the peer, as the kernel recorded it at `connect` (`SO_PEERCRED`).
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`, as
    // `SO_PEERCRED` requires; the descriptor is borrowed from a live stream.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Checks the peer and hands the connection to a thread of its own.
fn admit(stream: UnixStream, active: &Arc<AtomicUsize>) {
    let refuse = |mut stream: &UnixStream, why: &str| {
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = stream.write_all(format!("{}\n", error_reply(why)).as_bytes());
    };
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    match peer_uid(&stream) {
        Ok(uid) if uid == path::euid() => {}
        Ok(uid) => {
            return refuse(
                &stream,
                &format!("permission denied: peer uid {uid} is not the owner"),
            )
        }
        Err(_) => return refuse(&stream, "permission denied: peer unknown"),
    }
    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
        active.fetch_sub(1, Ordering::AcqRel);
        return refuse(&stream, "busy: too many connections, try again");
    }
    let counted = Active(active.clone());
    let spawned = std::thread::Builder::new()
        .name("cmwq-control-c".into())
        .spawn(move || {
            let _counted = counted;
            serve_connection(stream);
        });
    // On failure the closure, and with it the stream and the count, are dropped.
    drop(spawned);
}

/// One served connection: released when its thread ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads request lines and writes one reply line each, until the peer closes, falls silent
/// for [`IDLE_TIMEOUT`], or stops reading.
///
/// A line longer than [`MAX_REQUEST`] gets its error reply as soon as the limit is passed;
/// the rest of it, up to the next newline, is discarded unread.
fn serve_connection(mut stream: UnixStream) {
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let mut line: Vec<u8> = Vec::with_capacity(MAX_REQUEST + 2);
    let mut discarding = false;
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return, // timed out or reset
        };
        for &b in &chunk[..n] {
            let reply = if b == b'\n' {
                let was_discarding = std::mem::replace(&mut discarding, false);
                let reply = (!was_discarding).then(|| answer_bytes(&line));
                line.clear();
                reply
            } else if discarding {
                None
            } else if line.len() > MAX_REQUEST {
                // One byte over, allowing for a '\r' before the newline.
                discarding = true;
                line.clear();
                Some(error_reply(&format!(
                    "request too long (more than {MAX_REQUEST} bytes); ignored up to the next \
                     newline"
                )))
            } else {
                line.push(b);
                None
            };
            if let Some(mut reply) = reply {
                reply.push('\n');
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
