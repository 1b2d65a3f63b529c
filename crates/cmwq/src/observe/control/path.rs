//! Where endpoints live, who may reach them, and which of them are alive.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::Error;

/// Mode of the socket directory: only its owner may list it or reach a socket in it.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of a socket file.
pub(crate) const SOCKET_MODE: u32 = 0o600;

/// The effective uid of this process: the owner of its endpoint and the only peer it accepts.
pub(crate) fn euid() -> u32 {
    // SAFETY: `geteuid` takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// The directory of this user's endpoints: `$XDG_RUNTIME_DIR/cmwq` when `XDG_RUNTIME_DIR` is
/// set to an absolute path, else `/tmp/cmwq-<uid>` (`<uid>` the effective uid).
///
/// Read from the environment at each call, so a client sees the same directory as the
/// servers started with the same environment.
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => Path::new(&d).join("cmwq"),
        _ => PathBuf::from(format!("/tmp/cmwq-{}", euid())),
    }
}

/// The socket of process `pid`'s endpoint: `<socket_dir()>/<pid>.sock`.
pub fn socket_path(pid: u32) -> PathBuf {
    socket_dir().join(format!("{pid}.sock"))
}

/// Where a client looks: [`socket_dir()`](socket_dir), then `/tmp/cmwq-<uid>` if that is
/// another directory (a process started without `XDG_RUNTIME_DIR`, by a service manager
/// say, is found from a login shell that has it).
pub(crate) fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![socket_dir()];
    let fallback = PathBuf::from(format!("/tmp/cmwq-{}", euid()));
    if dirs[0] != fallback {
        dirs.push(fallback);
    }
    dirs
}

/// The socket of `pid` in the first of [`search_dirs`] that has one, else
/// [`socket_path`]`(pid)`.
pub(crate) fn find_socket(pid: u32) -> PathBuf {
    search_dirs()
        .into_iter()
        .map(|d| d.join(format!("{pid}.sock")))
        .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .unwrap_or_else(|| socket_path(pid))
}

/// A process that serves an endpoint, as [`endpoints`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// The process id.
    pub pid: u32,
    /// Its socket.
    pub path: PathBuf,
}

/// The endpoints of this user's live processes, by pid: the sockets of
/// [`socket_dir()`](socket_dir) (and of `/tmp/cmwq-<uid>`, where processes started without
/// `XDG_RUNTIME_DIR` serve) whose process still exists. Stale sockets, left by processes
/// that died without removing them, are skipped (and removed by the next
/// [`serve`](super::serve) in their directory).
pub fn endpoints() -> Vec<Endpoint> {
    let mut found: Vec<Endpoint> = Vec::new();
    for dir in search_dirs() {
        for (pid, path) in sockets_in(&dir) {
            if pid_alive(pid) && !found.iter().any(|e| e.pid == pid) {
                found.push(Endpoint { pid, path });
            }
        }
    }
    found.sort_by_key(|e| e.pid);
    found
}

/// The `<pid>.sock` sockets of `dir` (none if it cannot be read).
fn sockets_in(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .filter_map(|e| {
            let name = e.file_name();
            let pid = name.to_str()?.strip_suffix(".sock")?;
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((pid.parse().ok()?, e.path()))
        })
        .collect()
}

/// Whether process `pid` exists (whoever owns it).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; `kill` only checks that the process exists and may be
    // signalled. It touches no memory of ours.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether something accepts connections on the socket at `path`.
pub(crate) fn is_listening(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// Makes `dir` (not its parents) private to this user: created with mode 0700, or, if it
/// exists, checked to be a real directory (not a link) owned by this user and set to 0700.
/// Refused if someone else owns it: in `/tmp` that would be a trap laid by another user.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), Error> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::Control {
        reason: format!("{what} {}: {e}", dir.display()),
    };
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail("cannot create socket directory", &e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| fail("cannot inspect", &e))?;
    if !meta.file_type().is_dir() {
        return Err(fail("not a directory", &"refusing to use it"));
    }
    if meta.uid() != euid() {
        return Err(fail(
            "socket directory is not ours",
            &format_args!("owned by uid {}, we are {}", meta.uid(), euid()),
        ));
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        // Ours, so we may fix it (umask, or a hand-made directory).
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| fail("cannot make private", &e))?;
    }
    Ok(())
}

/// Removes the sockets in `dir` of processes that no longer exist and that nothing listens
/// on. A live process's socket is never touched.
pub(crate) fn sweep_stale(dir: &Path) {
    for (pid, path) in sockets_in(dir) {
        if !pid_alive(pid) && !is_listening(&path) {
            let _ = fs::remove_file(&path);
        }
    }
}
