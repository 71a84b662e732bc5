//! The shim's one loop: `poll(2)` over its socket, its clients, the
//! container's output, stdin and a `signalfd(2)` for `SIGCHLD`.
//!
//! Nothing in it blocks on a client: sockets and pipes are non-blocking,
//! what a client cannot take yet waits in its buffer. The runtime's
//! commands (`start`, `kill`, `delete`) are run to their end, as they are
//! short and the container waits for nobody meanwhile (its output stays
//! in the pipe until the loop reads it again).
//!
//! Simplifications, named: a client that lets more than [`MAX_BUFFERED`]
//! of output pile up is disconnected (Docker instead slows the
//! container down to the slowest attacher); output still coming
//! [`DRAIN`] after the container's first process exited (a daemonised
//! grandchild in a shared pid namespace holding the pipe) is no longer
//! waited for.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use std::{fs, io};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::logs::Writer;
use super::protocol::{
    Exit, Failure, MAX_REQUEST, Reply, Request, Status, Stream, frame_header,
};
use super::runtime::{Runtime, log_size};
use super::{
    EXIT_FILE, Error, Options, PID_FILE, RUNTIME_LOG, SHIM_LOG, SOCKET, sys,
};
use crate::path_io;
use crate::runtime::state::Identity;

/// The most output kept for one client that does not read it.
pub const MAX_BUFFERED: usize = 8 << 20;
/// How long the shim, deleted, waits for each client to take the rest
/// of what it is owed.
pub const FLUSH: Duration = Duration::from_secs(2);
/// How long output is still read after the first process has exited.
pub const DRAIN: Duration = Duration::from_secs(1);
/// The most stdin kept for a container that does not read it; clients
/// are not read from meanwhile.
const MAX_STDIN: usize = 1 << 20;
/// One read of output.
const CHUNK: usize = 32 * 1024;

/// What a client is to the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Its request line is being read.
    Asking,
    /// It gets the output (and may send stdin).
    Attached {
        stdin: bool,
        stdout: bool,
        stderr: bool,
        close_stdin: bool,
    },
    /// It waits for the exit.
    Waiting,
    /// Its last bytes are being sent; then it is closed.
    Closing,
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    role: Role,
    input: Vec<u8>,
    output: Vec<u8>,
    /// It has closed its side (or the shim stopped reading it).
    read_done: bool,
    /// Drop it at the end of this turn.
    gone: bool,
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        if self.output.len() + bytes.len() > MAX_BUFFERED {
            self.gone = true;
        } else {
            self.output.extend_from_slice(bytes);
        }
    }

    fn reply(&mut self, reply: &Reply) {
        let mut line = serde_json::to_vec(reply).unwrap_or_default();
        line.push(b'\n');
        self.send(&line);
    }
}

/// The container's stdio, the shim's ends.
#[derive(Debug, Default)]
struct Stdio3 {
    /// Readable ends still open: stdout and stderr pipes, or the pty
    /// master (as stdout).
    outputs: Vec<(Stream, OwnedFd)>,
    /// The writable end of stdin (a pipe, or the master again).
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    /// Close stdin once `stdin_pending` is written.
    stdin_closing: bool,
    /// The pty master, for `TIOCSWINSZ`.
    master: Option<OwnedFd>,
}

/// A shim serving one container.
pub struct Shim {
    options: Options,
    runtime: Runtime,
    listener: UnixListener,
    signals: SignalFd,
    pid: Pid,
    started: bool,
    exit: Option<Exit>,
    /// When output stops being waited for, once the process has exited.
    drain_until: Option<Instant>,
    stdio: Stdio3,
    log: Writer,
    clients: Vec<Client>,
    /// Waiters and attachers have been told that it is over.
    told: bool,
}

impl Shim {
    /// Bind the socket, run `runtime create` with the container's stdio,
    /// and learn the pid of the container's first process.
    pub fn create(options: Options) -> Result<Shim, Error> {
        let dir = &options.dir;
        // SIGCHLD is read from a signalfd; it must be blocked before the
        // runtime runs, so that none is lost. SIGPIPE: a client that went
        // away is an EPIPE, not the shim's death.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(sys("block SIGCHLD"))?;
        // SAFETY: SIG_IGN for SIGPIPE installs no handler code.
        unsafe {
            nix::sys::signal::signal(
                Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigIgn,
            )
        }
        .map_err(sys("ignore SIGPIPE"))?;
        let signals = SignalFd::with_flags(
            &mask,
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        )
        .map_err(sys("make a signalfd"))?;
        let socket = dir.join(SOCKET);
        let _ = fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .map_err(path_io::at("listen on", &socket))?;
        listener
            .set_nonblocking(true)
            .map_err(path_io::at("listen on", &socket))?;
        // Only root (the daemon) may talk to the shim.
        set_mode(&socket, 0o600)?;
        let log = Writer::open(&options.log_dir, options.log)?;
        let runtime = Runtime {
            path: options.runtime.clone(),
            root: options.runtime_root.clone(),
            log: dir.join(RUNTIME_LOG),
        };
        let (pid, stdio) = create_container(&options, &runtime)
            .inspect_err(|_| drop(fs::remove_file(&socket)))?;
        let identity = Identity::of(nix::unistd::getpid());
        let pid_file = dir.join(PID_FILE);
        let bytes = serde_json::to_vec(&identity).unwrap_or_default();
        if let Err(e) = path_io::replace_durably(&pid_file, &bytes, 0o600) {
            let _ = runtime.run("delete", &["delete", "--force", &options.id]);
            let _ = fs::remove_file(&socket);
            return Err(e.into());
        }
        Ok(Shim {
            options,
            runtime,
            listener,
            signals,
            pid,
            started: false,
            exit: None,
            drain_until: None,
            stdio,
            log,
            clients: Vec::new(),
            told: false,
        })
    }

    /// What the launcher prints for the daemon.
    pub fn ready_line(&self) -> String {
        serde_json::json!({
            "pid": self.pid.as_raw(),
            "shim_pid": std::process::id(),
        })
        .to_string()
    }

    /// Serve until the container is deleted; the shim's exit code.
    pub fn serve(&mut self) -> i32 {
        loop {
            match self.turn() {
                Ok(true) => {}
                Ok(false) => return 0,
                Err(error) => {
                    self.warn(&crate::child::error_chain(&error));
                    return 1;
                }
            }
        }
    }

    fn warn(&self, message: &str) {
        let path = self.options.dir.join(SHIM_LOG);
        let line =
            format!("{} {message}\n", crate::time::rfc3339(SystemTime::now()));
        let _ = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }

    /// Output has ended (or is no longer waited for).
    fn output_done(&self) -> bool {
        self.stdio.outputs.is_empty()
    }

    /// One `poll(2)` and what it found; `false` once the shim is done.
    fn turn(&mut self) -> Result<bool, Error> {
        let mut fds = Vec::new();
        let mut what = Vec::new();
        let mut watch = |fd: RawFd, events: libc::c_short, tag: Tag| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            what.push(tag);
        };
        watch(self.signals.as_raw_fd(), libc::POLLIN, Tag::Signals);
        watch(self.listener.as_raw_fd(), libc::POLLIN, Tag::Listener);
        for (i, (_, fd)) in self.stdio.outputs.iter().enumerate() {
            watch(fd.as_raw_fd(), libc::POLLIN, Tag::Output(i));
        }
        if let Some(stdin) = &self.stdio.stdin
            && !self.stdio.stdin_pending.is_empty()
        {
            watch(stdin.as_raw_fd(), libc::POLLOUT, Tag::Stdin);
        }
        let stdin_room = self.stdio.stdin_pending.len() < MAX_STDIN;
        for (i, client) in self.clients.iter().enumerate() {
            let mut events = 0;
            let reads = match client.role {
                Role::Asking => true,
                Role::Attached { .. } => stdin_room,
                Role::Waiting | Role::Closing => false,
            };
            if reads && !client.read_done {
                events |= libc::POLLIN;
            }
            if !client.output.is_empty() {
                events |= libc::POLLOUT;
            }
            watch(client.stream.as_raw_fd(), events, Tag::Client(i));
        }
        let timeout = match self.drain_until {
            Some(until) if !self.output_done() => {
                let left = until.saturating_duration_since(Instant::now());
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
            }
            _ => -1,
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds that lives
        // across the call.
        let rc = unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout)
        };
        match Errno::result(rc) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys("poll")(e)),
        }
        let mut closed_outputs = Vec::new();
        for (pollfd, tag) in fds.iter().zip(what) {
            if pollfd.revents == 0 {
                continue;
            }
            match tag {
                Tag::Signals => self.reap()?,
                Tag::Listener => self.accept(),
                Tag::Output(i) => {
                    if !self.read_output(i) {
                        closed_outputs.push(i);
                    }
                }
                Tag::Stdin => self.write_stdin(),
                Tag::Client(i) => {
                    let hangup =
                        pollfd.revents & (libc::POLLHUP | libc::POLLERR) != 0;
                    if hangup && self.clients[i].read_done {
                        // Gone both ways: nothing can reach it any more.
                        self.clients[i].gone = true;
                    } else if (pollfd.revents & libc::POLLIN != 0 || hangup)
                        && let Some(done) = self.read_client(i)?
                    {
                        return Ok(done);
                    }
                    if pollfd.revents & libc::POLLOUT != 0 {
                        flush(&mut self.clients[i]);
                    }
                }
            }
        }
        for i in closed_outputs.into_iter().rev() {
            self.end_output(i);
        }
        if self
            .drain_until
            .is_some_and(|until| Instant::now() >= until)
        {
            while !self.stdio.outputs.is_empty() {
                self.end_output(0);
            }
        }
        self.tell_if_over();
        self.clients.retain(|c| {
            !(c.gone || c.role == Role::Closing && c.output.is_empty())
        });
        Ok(true)
    }

    // ANCHOR: tell
    /// Once the process has exited and its output has ended: waiters get
    /// the exit, attachers the end of their stream.
    fn tell_if_over(&mut self) {
        if let (Some(exit), true, false) =
            (&self.exit, self.output_done(), self.told)
        {
            let exit = exit.clone();
            for client in &mut self.clients {
                match client.role {
                    Role::Waiting => {
                        client.reply(&Reply::Exited(exit.clone()));
                        client.role = Role::Closing;
                    }
                    Role::Attached { .. } => client.role = Role::Closing,
                    Role::Asking | Role::Closing => {}
                }
            }
            self.stdio.stdin = None;
            self.told = true;
        }
    }
    // ANCHOR_END: tell

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream,
                    role: Role::Asking,
                    input: Vec::new(),
                    output: Vec::new(),
                    read_done: false,
                    gone: false,
                });
            }
        }
    }

    /// Read what output `i` has: to the log and the attached clients.
    /// `false` at its end.
    fn read_output(&mut self, i: usize) -> bool {
        let (stream, fd) = &self.stdio.outputs[i];
        let stream = *stream;
        let mut buffer = vec![0u8; CHUNK];
        let n = match nix::unistd::read(fd, &mut buffer) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return true,
            // EIO: a pty whose every slave is closed.
            Err(_) => return false,
        };
        let bytes = &buffer[..n];
        if let Err(e) = self.log.write(stream, bytes, SystemTime::now()) {
            self.warn(&crate::child::error_chain(&e));
        }
        let tty = self.options.tty;
        for client in &mut self.clients {
            if let Role::Attached { stdout, stderr, .. } = client.role {
                let wanted = match stream {
                    Stream::Stdout => stdout,
                    Stream::Stderr => stderr,
                    Stream::Stdin => false,
                };
                if !wanted {
                    continue;
                }
                if tty {
                    client.send(bytes);
                } else {
                    let mut frame = frame_header(stream, n as u32).to_vec();
                    frame.extend_from_slice(bytes);
                    client.send(&frame);
                }
            }
        }
        true
    }

    fn end_output(&mut self, i: usize) {
        let (stream, _) = self.stdio.outputs.remove(i);
        if let Err(e) = self.log.end(stream, SystemTime::now()) {
            self.warn(&crate::child::error_chain(&e));
        }
    }

    fn write_stdin(&mut self) {
        let Some(stdin) = &self.stdio.stdin else {
            return;
        };
        match nix::unistd::write(stdin, &self.stdio.stdin_pending) {
            Ok(n) => {
                self.stdio.stdin_pending.drain(..n);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // The container closed its stdin: what is left goes nowhere.
            Err(_) => {
                self.stdio.stdin_pending.clear();
                self.stdio.stdin = None;
            }
        }
        if self.stdio.stdin_pending.is_empty() && self.stdio.stdin_closing {
            self.close_stdin();
        }
    }

    fn close_stdin(&mut self) {
        // With a pty, stdin is the master: closing it would hang the
        // terminal up. End-of-input is Ctrl-D, which the client sends.
        if !self.options.tty {
            self.stdio.stdin = None;
        }
        self.stdio.stdin_closing = false;
    }

    /// Read from client `i`. `Some(false)`: the shim is done (deleted).
    fn read_client(&mut self, i: usize) -> Result<Option<bool>, Error> {
        let mut buffer = vec![0u8; CHUNK];
        let client = &mut self.clients[i];
        let n = match client.stream.read(&mut buffer) {
            Ok(n) => n,
            Err(e)
                if e.kind() == ErrorKind::WouldBlock
                    || e.kind() == ErrorKind::Interrupted =>
            {
                return Ok(None);
            }
            Err(_) => {
                client.gone = true;
                return Ok(None);
            }
        };
        match client.role {
            Role::Asking => {
                if n == 0 {
                    client.gone = true;
                    return Ok(None);
                }
                client.input.extend_from_slice(&buffer[..n]);
                let Some(newline) =
                    client.input.iter().position(|&b| b == b'\n')
                else {
                    if client.input.len() > MAX_REQUEST {
                        client.reply(&refuse(
                            Failure::BadRequest,
                            "request too long".into(),
                        ));
                        client.role = Role::Closing;
                    }
                    return Ok(None);
                };
                let rest = client.input.split_off(newline + 1);
                let line = std::mem::replace(&mut client.input, rest);
                match serde_json::from_slice::<Request>(&line) {
                    Ok(request) => return self.handle(i, request),
                    Err(e) => {
                        client.reply(&refuse(
                            Failure::BadRequest,
                            format!("bad request: {e}"),
                        ));
                        client.role = Role::Closing;
                    }
                }
            }
            Role::Attached {
                stdin, close_stdin, ..
            } => {
                if n == 0 {
                    client.read_done = true;
                    if stdin && close_stdin {
                        self.stdio.stdin_closing = true;
                        if self.stdio.stdin_pending.is_empty() {
                            self.close_stdin();
                        }
                    }
                } else if stdin && self.stdio.stdin.is_some() {
                    self.stdio.stdin_pending.extend_from_slice(&buffer[..n]);
                }
            }
            Role::Waiting | Role::Closing => {
                if n == 0 {
                    client.read_done = true;
                }
            }
        }
        Ok(None)
    }

    fn status(&self) -> Status {
        match (self.started, &self.exit) {
            (_, Some(_)) => Status::Stopped,
            (true, None) => Status::Running,
            (false, None) => Status::Created,
        }
    }

    /// Answer `request` of client `i`.
    fn handle(
        &mut self,
        i: usize,
        request: Request,
    ) -> Result<Option<bool>, Error> {
        let status = self.status();
        let id = self.options.id.clone();
        let reply = match request {
            Request::State => Reply::State {
                pid: self.pid.as_raw(),
                status,
                exit: self.exit.clone(),
            },
            Request::Start => match status {
                Status::Created => {
                    let result = self.runtime.run("start", &["start", &id]);
                    self.started = result.is_ok();
                    answer(result)
                }
                Status::Running => refuse(
                    Failure::Conflict,
                    "the container is already running".into(),
                ),
                Status::Stopped => {
                    refuse(Failure::Conflict, "the container has exited".into())
                }
            },
            Request::Kill { signal, all } => match status {
                Status::Created | Status::Running => {
                    let signal = signal.to_string();
                    let mut args = vec!["kill"];
                    if all {
                        args.push("--all");
                    }
                    args.extend([id.as_str(), signal.as_str()]);
                    answer(self.runtime.run("kill", &args))
                }
                Status::Stopped => refuse(
                    Failure::Conflict,
                    "the container is not running".into(),
                ),
            },
            Request::Resize { rows, cols } => match &self.stdio.master {
                Some(master) => {
                    answer(resize(master.as_fd().as_raw_fd(), rows, cols))
                }
                None => refuse(
                    Failure::BadRequest,
                    "the container has no terminal".into(),
                ),
            },
            Request::Attach {
                stdin,
                stdout,
                stderr,
                close_stdin,
            } => {
                let client = &mut self.clients[i];
                client.reply(&Reply::Ok);
                client.role = if self.told {
                    Role::Closing
                } else {
                    Role::Attached {
                        stdin,
                        stdout,
                        stderr,
                        close_stdin,
                    }
                };
                // Bytes sent right after the request are stdin already.
                let early = std::mem::take(&mut client.input);
                if stdin && !early.is_empty() && self.stdio.stdin.is_some() {
                    self.stdio.stdin_pending.extend_from_slice(&early);
                }
                return Ok(None);
            }
            Request::Wait => {
                let client = &mut self.clients[i];
                match (&self.exit, self.told) {
                    (Some(exit), true) => {
                        client.reply(&Reply::Exited(exit.clone()));
                        client.role = Role::Closing;
                    }
                    _ => client.role = Role::Waiting,
                }
                return Ok(None);
            }
            Request::Pause | Request::Resume => match status {
                Status::Running => {
                    let op = if request == Request::Pause {
                        "pause"
                    } else {
                        "resume"
                    };
                    answer(self.runtime.run(op, &[op, &id]))
                }
                Status::Created | Status::Stopped => refuse(
                    Failure::Conflict,
                    "the container is not running".into(),
                ),
            },
            Request::Delete => match status {
                Status::Running => refuse(
                    Failure::Conflict,
                    "the container is running: kill it first".into(),
                ),
                Status::Created | Status::Stopped => {
                    match self
                        .runtime
                        .run("delete", &["delete", "--force", &id])
                    {
                        Ok(()) => {
                            self.finish(i);
                            return Ok(Some(false));
                        }
                        Err(e) => answer(Err(e)),
                    }
                }
            },
        };
        let client = &mut self.clients[i];
        client.reply(&reply);
        client.role = Role::Closing;
        Ok(None)
    }

    /// After `delete`: reap a first process that never ran, send every
    /// client what it is owed (the attachers may still hold the end of
    /// the output, the deleting client its reply; blocking now, at most
    /// [`FLUSH`] each: it is the last thing the shim does), and remove
    /// the socket and pid file. The log and the exit record stay for the
    /// daemon, which owns the directory.
    fn finish(&mut self, i: usize) {
        if self.exit.is_none() {
            // `delete --force` killed it; it is our child.
            let _ = waitpid(self.pid, None);
        }
        let _ = fs::remove_file(self.options.dir.join(SOCKET));
        let _ = fs::remove_file(self.options.dir.join(PID_FILE));
        self.clients[i].reply(&Reply::Ok);
        for client in &mut self.clients {
            if client.gone || client.output.is_empty() {
                continue;
            }
            let _ = client.stream.set_nonblocking(false);
            let _ = client.stream.set_write_timeout(Some(FLUSH));
            let _ = client.stream.write_all(&client.output);
        }
    }

    // ANCHOR: reap
    /// Reap every child that has exited; the first process's exit is
    /// recorded.
    fn reap(&mut self) -> Result<(), Error> {
        while let Ok(Some(_)) = self.signals.read_signal() {}
        loop {
            let (pid, code, signal) =
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => (pid, code, None),
                    Ok(WaitStatus::Signaled(pid, signal, _)) => {
                        (pid, 128 + signal as i32, Some(signal as i32))
                    }
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => {
                        return Ok(());
                    }
                    Ok(_) => continue,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(sys("reap")(e)),
                };
            if pid != self.pid || self.exit.is_some() {
                continue;
            }
            let exit = Exit {
                pid: pid.as_raw(),
                code,
                signal,
                at: crate::time::rfc3339(SystemTime::now()),
            };
            let bytes = serde_json::to_vec(&exit).unwrap_or_default();
            let path = self.options.dir.join(EXIT_FILE);
            if let Err(e) = path_io::replace_durably(&path, &bytes, 0o600) {
                self.warn(&crate::child::error_chain(&e));
            }
            self.exit = Some(exit);
            self.drain_until = Some(Instant::now() + DRAIN);
        }
    }
    // ANCHOR_END: reap
}

/// What a poll entry is.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Signals,
    Listener,
    Output(usize),
    Stdin,
    Client(usize),
}

fn refuse(failure: Failure, message: String) -> Reply {
    Reply::Error { failure, message }
}

fn answer(result: Result<(), Error>) -> Reply {
    match result {
        Ok(()) => Reply::Ok,
        Err(e) => refuse(Failure::Runtime, crate::child::error_chain(&e)),
    }
}

/// Send what client `c` can take now.
fn flush(c: &mut Client) {
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(0) => {
                c.gone = true;
                return;
            }
            Ok(n) => {
                c.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                c.gone = true;
                return;
            }
        }
    }
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(path_io::at("chmod", path))
        .map_err(Error::from)
}

/// `TIOCSWINSZ` on the pty master `fd`.
fn resize(fd: RawFd, rows: u16, cols: u16) -> Result<(), Error> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize through the pointer, alive here.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) };
    Errno::result(rc)
        .map(drop)
        .map_err(sys("resize the terminal"))
}

/// A pipe whose `keep` end (0 read, 1 write) is ours and non-blocking;
/// the other end is for the container.
fn pipe(keep: usize) -> Result<(OwnedFd, OwnedFd), Error> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(sys("pipe"))?;
    let (ours, theirs) = if keep == 0 {
        (read, write)
    } else {
        (write, read)
    };
    nix::fcntl::fcntl(
        &ours,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(sys("make a pipe non-blocking"))?;
    Ok((ours, theirs))
}

/// `runtime create` with the container's stdio: pipes, or with a
/// terminal a console socket on which the pty master arrives. The
/// container's first process, orphaned when `create` exits, is now the
/// shim's child (the shim is its subreaper).
fn create_container(
    options: &Options,
    runtime: &Runtime,
) -> Result<(Pid, Stdio3), Error> {
    let dir = &options.dir;
    let pid_file = dir.join("init.pid");
    let _ = fs::remove_file(&pid_file);
    let bundle = options.bundle.to_string_lossy().into_owned();
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let mut args = vec!["create", "--bundle", &bundle, "--pid-file", &pid_arg];
    let mut stdio = Stdio3::default();
    let mut command;
    let console = dir.join("console.sock");
    let console_arg = console.to_string_lossy().into_owned();
    let console_listener = if options.tty {
        let _ = fs::remove_file(&console);
        let listener = UnixListener::bind(&console)
            .map_err(path_io::at("listen on", &console))?;
        set_mode(&console, 0o600)?;
        args.extend(["--console-socket", &console_arg]);
        args.push(&options.id);
        command = runtime.command(&args);
        Some(listener)
    } else {
        args.push(&options.id);
        command = runtime.command(&args);
        let (stdout, theirs_out) = pipe(0)?;
        let (stderr, theirs_err) = pipe(0)?;
        command
            .stdout(Stdio::from(theirs_out))
            .stderr(Stdio::from(theirs_err));
        stdio.outputs =
            vec![(Stream::Stdout, stdout), (Stream::Stderr, stderr)];
        if options.stdin {
            let (stdin, theirs_in) = pipe(1)?;
            command.stdin(Stdio::from(theirs_in));
            stdio.stdin = Some(stdin);
        }
        None
    };
    let mark = log_size(&runtime.log);
    let mut child = runtime.spawn("create", &mut command)?;
    // Our copies of the container's ends go: only the container holds
    // them, so its exit is our end-of-file.
    drop(command);
    let status = child.wait().map_err(|source| Error::Spawn {
        runtime: runtime.path.clone(),
        op: "create",
        source,
    })?;
    let created = runtime.check("create", status, mark, "");
    if let Err(e) = created {
        let _ = fs::remove_file(&console);
        // Whatever the runtime left half made.
        let _ = runtime.run("delete", &["delete", "--force", &options.id]);
        return Err(e);
    }
    // From here on a runtime container exists: whatever fails deletes it,
    // or its first process would wait on its exec fifo for ever.
    let finished =
        finish_create(options, console_listener, &console, &pid_file, stdio);
    if finished.is_err() {
        let _ = runtime.run("delete", &["delete", "--force", &options.id]);
    }
    finished
}

/// The rest of a successful `create`: with a terminal, take the pty
/// master from the console socket; read the first process's pid.
fn finish_create(
    options: &Options,
    console_listener: Option<UnixListener>,
    console: &std::path::Path,
    pid_file: &std::path::Path,
    mut stdio: Stdio3,
) -> Result<(Pid, Stdio3), Error> {
    if let Some(listener) = console_listener {
        let master = receive_master(&listener);
        let _ = fs::remove_file(console);
        let master = master?;
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(sys("make the pty non-blocking"))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone().map_err(|e| Error::Sys {
                what: "dup the pty master",
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
        };
        stdio.stdin = options.stdin.then(|| dup(&master)).transpose()?;
        stdio.master = Some(dup(&master)?);
        stdio.outputs = vec![(Stream::Stdout, master)];
    }
    let pid = fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .map(Pid::from_raw)
        .ok_or_else(|| Error::PidFile(pid_file.to_owned()))?;
    Ok((pid, stdio))
}

/// The pty master the runtime sent on the console socket during
/// `create` (the connection waits in the listener's backlog).
fn receive_master(listener: &UnixListener) -> Result<OwnedFd, Error> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    listener.set_nonblocking(true).map_err(|e| Error::Sys {
        what: "accept the console connection",
        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let (stream, _) = listener.accept().map_err(|e| Error::Sys {
        what: "accept the console connection (the runtime sent no terminal)",
        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let mut name = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("receive the pty master"))?;
    let mut received = None;
    for cmsg in message.cmsgs().map_err(sys("receive the pty master"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel installed these fds for us just now;
                // each is owned once (extra ones are closed by the drop).
                let fd = unsafe {
                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                };
                received.get_or_insert(fd);
            }
        }
    }
    received.ok_or(Error::Sys {
        what: "receive the pty master (no fd came)",
        source: Errno::EBADMSG,
    })
}
