//! A blocking client of one shim: what the tests use, and what the
//! daemon runs on its blocking threads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::protocol::{Exit, MAX_REQUEST, Reply, Request, Status};
use super::{Error, SOCKET};

/// The longest a shim may take to answer: its slowest request runs the
/// runtime's `create` hooks or `delete`; a shim stuck longer is treated
/// as failed rather than stalling the daemon.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The shim whose directory is `dir`.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// The shim serving from `dir`.
    pub fn new(dir: &Path) -> Client {
        Client {
            socket: dir.join(SOCKET),
        }
    }

    fn fail(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        let path = self.socket.clone();
        move |source| Error::Client { path, what, source }
    }

    /// Send `request` on a new connection and read the reply line; the
    /// connection is returned for what follows it (attach), without a
    /// timeout. A reply must come within [`TIMEOUT`], but for `wait`,
    /// which may wait for ever.
    fn ask(&self, request: &Request) -> Result<(Reply, UnixStream), Error> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(self.fail("connect"))?;
        let timeout = (*request != Request::Wait).then_some(TIMEOUT);
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(self.fail("connect"))?;
        let mut line = serde_json::to_vec(request).unwrap_or_default();
        line.push(b'\n');
        stream.write_all(&line).map_err(self.fail("send"))?;
        // Byte by byte: what follows the reply's newline is the
        // container's output, not ours to consume.
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match stream
                .read(&mut byte)
                .map_err(self.fail("read the reply"))?
            {
                0 => {
                    return Err(self.fail("read the reply")(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                _ if byte[0] == b'\n' => break,
                _ if reply.len() >= MAX_REQUEST => {
                    return Err(Error::Unexpected(self.socket.clone()));
                }
                _ => reply.push(byte[0]),
            }
        }
        stream
            .set_read_timeout(None)
            .and_then(|()| stream.set_write_timeout(None))
            .map_err(self.fail("read the reply"))?;
        let reply: Reply = serde_json::from_slice(&reply)
            .map_err(|_| Error::Unexpected(self.socket.clone()))?;
        match reply {
            Reply::Error { failure, message } => {
                Err(Error::Refused { failure, message })
            }
            reply => Ok((reply, stream)),
        }
    }

    fn ok(&self, request: &Request) -> Result<(), Error> {
        match self.ask(request)?.0 {
            Reply::Ok => Ok(()),
            _ => Err(Error::Unexpected(self.socket.clone())),
        }
    }

    /// The first process's pid, its status and its exit.
    pub fn state(&self) -> Result<(i32, Status, Option<Exit>), Error> {
        match self.ask(&Request::State)?.0 {
            Reply::State { pid, status, exit } => Ok((pid, status, exit)),
            _ => Err(Error::Unexpected(self.socket.clone())),
        }
    }

    /// Start the created container.
    pub fn start(&self) -> Result<(), Error> {
        self.ok(&Request::Start)
    }

    /// Send `signal` to the first process (or, `all`, to every one).
    pub fn kill(&self, signal: i32, all: bool) -> Result<(), Error> {
        self.ok(&Request::Kill { signal, all })
    }

    /// Set the size of the container's terminal, or (`exec`) of an exec
    /// session's.
    pub fn resize(
        &self,
        rows: u16,
        cols: u16,
        exec: Option<&str>,
    ) -> Result<(), Error> {
        self.ok(&Request::Resize {
            rows,
            cols,
            exec: exec.map(str::to_owned),
        })
    }

    /// Start an exec session `id` running `process` (the runtime spec's);
    /// with `attach`, the returned stream carries its stdio as after
    /// [`Client::attach`] (stdin if `stdin`).
    pub fn exec(
        &self,
        id: &str,
        process: serde_json::Value,
        tty: bool,
        stdin: bool,
        attach: bool,
    ) -> Result<UnixStream, Error> {
        let request = Request::Exec {
            id: id.to_owned(),
            process,
            tty,
            stdin,
            stdout: attach,
            stderr: attach,
        };
        match self.ask(&request)? {
            (Reply::Ok, stream) => Ok(stream),
            _ => Err(Error::Unexpected(self.socket.clone())),
        }
    }

    /// An exec session's pid, status and exit.
    pub fn exec_state(
        &self,
        id: &str,
    ) -> Result<(i32, Status, Option<Exit>), Error> {
        match self.ask(&Request::ExecState { id: id.to_owned() })?.0 {
            Reply::State { pid, status, exit } => Ok((pid, status, exit)),
            _ => Err(Error::Unexpected(self.socket.clone())),
        }
    }

    /// Block until the container has exited and its output has ended.
    pub fn wait(&self) -> Result<Exit, Error> {
        match self.ask(&Request::Wait)?.0 {
            Reply::Exited(exit) => Ok(exit),
            _ => Err(Error::Unexpected(self.socket.clone())),
        }
    }

    /// Attach: the stream then carries the output (frames without a
    /// terminal, raw with one) and takes stdin if `stdin`.
    pub fn attach(
        &self,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        close_stdin: bool,
    ) -> Result<UnixStream, Error> {
        let request = Request::Attach {
            stdin,
            stdout,
            stderr,
            close_stdin,
        };
        match self.ask(&request)? {
            (Reply::Ok, stream) => Ok(stream),
            _ => Err(Error::Unexpected(self.socket.clone())),
        }
    }

    /// The host pids of the container's processes.
    pub fn pids(&self) -> Result<Vec<i32>, Error> {
        match self.ask(&Request::Pids)?.0 {
            Reply::Pids { pids } => Ok(pids),
            _ => Err(Error::Unexpected(self.socket.clone())),
        }
    }

    /// Freeze the container.
    pub fn pause(&self) -> Result<(), Error> {
        self.ok(&Request::Pause)
    }

    /// Thaw the container.
    pub fn resume(&self) -> Result<(), Error> {
        self.ok(&Request::Resume)
    }

    /// Delete the container; the shim then exits.
    pub fn delete(&self) -> Result<(), Error> {
        self.ok(&Request::Delete)
    }
}
