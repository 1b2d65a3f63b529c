//! The client side: one connection, one request line out, one reply line back.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::observe::control::path;
use crate::Error;

/// Longest reply a client accepts (a dump of very many queues is large, not unbounded).
const MAX_REPLY: u64 = 64 << 20;
/// How long a client waits for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a process's endpoint.
///
/// ```no_run
/// let mut client = cmwq::control::Client::connect(1234)?;
/// let reply = client.request("stats")?; // {"ok":true,"result":[{"name":"events",...},...]}
/// # Ok::<(), cmwq::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the endpoint of process `pid`: at
    /// [`socket_path`](super::socket_path)`(pid)`, or, if there is none there, at
    /// `/tmp/cmwq-<uid>/<pid>.sock` (where a process started without `XDG_RUNTIME_DIR`
    /// serves).
    pub fn connect(pid: u32) -> Result<Client, Error> {
        Client::connect_path(&path::find_socket(pid))
    }

    /// Connects to the endpoint whose socket is at `path`.
    pub fn connect_path(path: &Path) -> Result<Client, Error> {
        let fail = |e: std::io::Error| Error::Control {
            reason: format!("cannot connect to {}: {e}", path.display()),
        };
        let writer = UnixStream::connect(path).map_err(fail)?;
        writer
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| writer.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(fail)?;
        let reader = BufReader::new(writer.try_clone().map_err(fail)?);
        Ok(Client { reader, writer })
    }

    /// Sends one request (without its newline) and returns the reply line, without its
    /// newline: a JSON object, `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
    /// An error reply is returned as `Ok` too; `Err` means the exchange itself failed.
    pub fn request(&mut self, request: &str) -> Result<String, Error> {
        let fail = |what: &str, e: &dyn std::fmt::Display| Error::Control {
            reason: format!("{what}: {e}"),
        };
        if request.contains('\n') {
            return Err(fail("bad request", &"a request is one line"));
        }
        let mut line = Vec::with_capacity(request.len() + 1);
        line.extend_from_slice(request.as_bytes());
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(|e| fail("cannot send the request", &e))?;
        let mut reply = Vec::new();
        (&mut self.reader)
            .take(MAX_REPLY)
            .read_until(b'\n', &mut reply)
            .map_err(|e| fail("cannot read the reply", &e))?;
        if reply.pop() != Some(b'\n') {
            return Err(fail(
                "cannot read the reply",
                &"the endpoint closed the connection (or the reply is too long)",
            ));
        }
        String::from_utf8(reply).map_err(|e| fail("reply is not UTF-8", &e))
    }
}
