//! The shim's one loop: `poll(2)` over its socket, its clients, the
//! output and stdin of the container's processes (its first one, and
//! those `exec` started), and a `signalfd(2)` for `SIGCHLD`.
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
//! waited for; past [`MAX_EXECS`] exec sessions, the oldest finished one
//! nobody is attached to is forgotten at each new one (running or
//! attached sessions are all kept).

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant, SystemTime};

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
use super::stdio::{Plan, Stdio, resize, set_mode};
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
/// How long output is still read after a process has exited.
pub const DRAIN: Duration = Duration::from_secs(1);
/// The most exec sessions kept.
pub const MAX_EXECS: usize = 256;
/// The most stdin kept for a process that does not read it; clients
/// are not read from meanwhile.
const MAX_STDIN: usize = 1 << 20;
/// One read of output.
const CHUNK: usize = 32 * 1024;
/// The key of the container's first process.
const INIT: u64 = 0;

/// What a client is to the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Its request line is being read.
    Asking,
    /// It gets process `proc`'s output (and may send its stdin).
    Attached {
        proc: u64,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        close_stdin: bool,
    },
    /// It waits for the first process's exit.
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

/// A process the shim holds: the container's first one, or an exec
/// session's.
#[derive(Debug)]
struct Proc {
    /// The exec session's name; `None` for the first process.
    exec: Option<String>,
    pid: Pid,
    tty: bool,
    /// Started (an exec session's process is started when made).
    started: bool,
    stdio: Stdio,
    exit: Option<Exit>,
    /// When output stops being waited for, once it has exited.
    drain_until: Option<Instant>,
    /// Waiters and attachers have been told that it is over.
    told: bool,
}

impl Proc {
    fn status(&self) -> Status {
        match (self.started, &self.exit) {
            (_, Some(_)) => Status::Stopped,
            (true, None) => Status::Running,
            (false, None) => Status::Created,
        }
    }
}

/// A shim serving one container.
pub struct Shim {
    options: Options,
    runtime: Runtime,
    listener: UnixListener,
    signals: SignalFd,
    /// Its processes by key: [`INIT`], then one per exec session.
    procs: BTreeMap<u64, Proc>,
    next_key: u64,
    /// The buffer every read of output and of clients goes through.
    buffer: Vec<u8>,
    log: Writer,
    clients: Vec<Client>,
}

/// What a poll entry is.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Signals,
    Listener,
    Output(u64, usize),
    Stdin(u64),
    Client(usize),
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
        let (pid, stdio) = run_with_stdio(
            &runtime,
            "create",
            vec![
                "create".into(),
                "--bundle".into(),
                options.bundle.to_string_lossy().into_owned(),
            ],
            &options.id,
            options.tty,
            options.stdin,
            dir,
        )
        .inspect_err(|_| drop(fs::remove_file(&socket)))?;
        let identity = Identity::of(nix::unistd::getpid());
        let pid_file = dir.join(PID_FILE);
        let bytes = serde_json::to_vec(&identity).unwrap_or_default();
        if let Err(e) = path_io::replace_durably(&pid_file, &bytes, 0o600) {
            let _ = runtime.run("delete", &["delete", "--force", &options.id]);
            let _ = fs::remove_file(&socket);
            return Err(e.into());
        }
        let init = Proc {
            exec: None,
            pid,
            tty: options.tty,
            started: false,
            stdio,
            exit: None,
            drain_until: None,
            told: false,
        };
        Ok(Shim {
            options,
            runtime,
            listener,
            signals,
            procs: BTreeMap::from([(INIT, init)]),
            next_key: INIT + 1,
            buffer: vec![0; CHUNK],
            log,
            clients: Vec::new(),
        })
    }

    fn init(&self) -> &Proc {
        self.procs
            .get(&INIT)
            .unwrap_or_else(|| unreachable!("init is never removed"))
    }

    /// What the launcher prints for the daemon.
    pub fn ready_line(&self) -> String {
        serde_json::json!({
            "pid": self.init().pid.as_raw(),
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
        let mut deadline: Option<Instant> = None;
        for (&key, proc) in &self.procs {
            for (i, (_, fd)) in proc.stdio.outputs.iter().enumerate() {
                watch(fd.as_raw_fd(), libc::POLLIN, Tag::Output(key, i));
            }
            if let Some(stdin) = &proc.stdio.stdin
                && !proc.stdio.stdin_pending.is_empty()
            {
                watch(stdin.as_raw_fd(), libc::POLLOUT, Tag::Stdin(key));
            }
            if let Some(until) = proc.drain_until
                && !proc.stdio.outputs.is_empty()
            {
                deadline = Some(deadline.map_or(until, |d| d.min(until)));
            }
        }
        for (i, client) in self.clients.iter().enumerate() {
            let mut events = 0;
            let reads = match client.role {
                Role::Asking => true,
                Role::Attached { proc, .. } => self
                    .procs
                    .get(&proc)
                    .is_some_and(|p| p.stdio.stdin_pending.len() < MAX_STDIN),
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
        let timeout = match deadline {
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
            }
            None => -1,
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
                Tag::Output(key, i) => {
                    if !self.read_output(key, i) {
                        closed_outputs.push((key, i));
                    }
                }
                Tag::Stdin(key) => self.write_stdin(key),
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
        for (key, i) in closed_outputs.into_iter().rev() {
            self.end_output(key, i);
        }
        let now = Instant::now();
        let overdue: Vec<u64> = self
            .procs
            .iter()
            .filter(|(_, p)| p.drain_until.is_some_and(|until| now >= until))
            .map(|(&key, _)| key)
            .collect();
        for key in overdue {
            while self
                .procs
                .get(&key)
                .is_some_and(|p| !p.stdio.outputs.is_empty())
            {
                self.end_output(key, 0);
            }
        }
        self.tell_if_over();
        self.clients.retain(|c| {
            !(c.gone || c.role == Role::Closing && c.output.is_empty())
        });
        Ok(true)
    }

    // ANCHOR: tell
    /// Once a process has exited and its output has ended: waiters get
    /// the exit, attachers the end of their stream.
    fn tell_if_over(&mut self) {
        for (&key, proc) in &mut self.procs {
            let Some(exit) = &proc.exit else { continue };
            if proc.told || !proc.stdio.outputs.is_empty() {
                continue;
            }
            for client in &mut self.clients {
                match client.role {
                    Role::Waiting if key == INIT => {
                        client.reply(&Reply::Exited(exit.clone()));
                        client.role = Role::Closing;
                    }
                    Role::Attached { proc, .. } if proc == key => {
                        client.role = Role::Closing;
                    }
                    _ => {}
                }
            }
            proc.stdio.stdin = None;
            proc.told = true;
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

    /// Read what output `i` of process `key` has: to the log (the first
    /// process's only, as Docker logs no exec session) and the attached
    /// clients. `false` at its end.
    fn read_output(&mut self, key: u64, i: usize) -> bool {
        // One buffer for every read of the shim's life, lent out here.
        let mut buffer = std::mem::take(&mut self.buffer);
        let more = self.read_output_into(key, i, &mut buffer);
        self.buffer = buffer;
        more
    }

    fn read_output_into(
        &mut self,
        key: u64,
        i: usize,
        buffer: &mut [u8],
    ) -> bool {
        let Some(proc) = self.procs.get(&key) else {
            return false;
        };
        let (stream, fd) = &proc.stdio.outputs[i];
        let stream = *stream;
        let tty = proc.tty;
        let n = match nix::unistd::read(fd, buffer) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return true,
            // EIO: a pty whose every slave is closed.
            Err(_) => return false,
        };
        let bytes = &buffer[..n];
        if key == INIT
            && let Err(e) = self.log.write(stream, bytes, SystemTime::now())
        {
            self.warn(&crate::child::error_chain(&e));
        }
        for client in &mut self.clients {
            if let Role::Attached {
                proc,
                stdout,
                stderr,
                ..
            } = client.role
            {
                let wanted = match stream {
                    Stream::Stdout => stdout,
                    Stream::Stderr => stderr,
                    Stream::Stdin => false,
                };
                if proc != key || !wanted {
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

    fn end_output(&mut self, key: u64, i: usize) {
        let Some(proc) = self.procs.get_mut(&key) else {
            return;
        };
        if i >= proc.stdio.outputs.len() {
            return;
        }
        let (stream, _) = proc.stdio.outputs.remove(i);
        if key == INIT
            && let Err(e) = self.log.end(stream, SystemTime::now())
        {
            self.warn(&crate::child::error_chain(&e));
        }
    }

    fn write_stdin(&mut self, key: u64) {
        let Some(proc) = self.procs.get_mut(&key) else {
            return;
        };
        let stdio = &mut proc.stdio;
        let Some(stdin) = &stdio.stdin else {
            return;
        };
        match nix::unistd::write(stdin, &stdio.stdin_pending) {
            Ok(n) => {
                stdio.stdin_pending.drain(..n);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // The process closed its stdin: what is left goes nowhere.
            Err(_) => {
                stdio.stdin_pending.clear();
                stdio.stdin = None;
            }
        }
        if stdio.stdin_pending.is_empty() && stdio.stdin_closing {
            close_stdin_of(proc);
        }
    }

    /// Read from client `i`. `Some(false)`: the shim is done (deleted).
    fn read_client(&mut self, i: usize) -> Result<Option<bool>, Error> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let result = self.read_client_into(i, &mut buffer);
        self.buffer = buffer;
        result
    }

    fn read_client_into(
        &mut self,
        i: usize,
        buffer: &mut [u8],
    ) -> Result<Option<bool>, Error> {
        let client = &mut self.clients[i];
        let n = match client.stream.read(buffer) {
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
                proc: key,
                stdin,
                close_stdin,
                ..
            } => {
                let Some(proc) = self.procs.get_mut(&key) else {
                    client.read_done = true;
                    return Ok(None);
                };
                if n == 0 {
                    client.read_done = true;
                    if stdin && close_stdin {
                        proc.stdio.stdin_closing = true;
                        if proc.stdio.stdin_pending.is_empty() {
                            close_stdin_of(proc);
                        }
                    }
                } else if stdin && proc.stdio.stdin.is_some() {
                    proc.stdio.stdin_pending.extend_from_slice(&buffer[..n]);
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

    /// Make client `i` an attacher of process `key`; bytes it sent right
    /// after its request are stdin already.
    fn attach(&mut self, i: usize, key: u64, role: Role) {
        let told = self.procs.get(&key).is_none_or(|p| p.told);
        let client = &mut self.clients[i];
        client.reply(&Reply::Ok);
        client.role = if told { Role::Closing } else { role };
        let early = std::mem::take(&mut client.input);
        if let (Role::Attached { stdin: true, .. }, Some(proc)) =
            (role, self.procs.get_mut(&key))
            && !early.is_empty()
            && proc.stdio.stdin.is_some()
        {
            proc.stdio.stdin_pending.extend_from_slice(&early);
        }
    }

    /// Answer `request` of client `i`.
    fn handle(
        &mut self,
        i: usize,
        request: Request,
    ) -> Result<Option<bool>, Error> {
        let status = self.init().status();
        let id = self.options.id.clone();
        let reply = match request {
            Request::State => Reply::State {
                pid: self.init().pid.as_raw(),
                status,
                exit: self.init().exit.clone(),
            },
            Request::ExecState { id } => match self.exec_key(&id) {
                Some(key) => {
                    let proc = &self.procs[&key];
                    Reply::State {
                        pid: proc.pid.as_raw(),
                        status: proc.status(),
                        exit: proc.exit.clone(),
                    }
                }
                None => {
                    refuse(Failure::NotFound, format!("no exec session {id}"))
                }
            },
            Request::Start => match status {
                Status::Created => {
                    let result = self.runtime.run("start", &["start", &id]);
                    if let Some(init) = self.procs.get_mut(&INIT) {
                        init.started = result.is_ok();
                    }
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
            Request::Resize { rows, cols, exec } => {
                let key = match &exec {
                    None => Some(INIT),
                    Some(name) => self.exec_key(name),
                };
                match key.and_then(|k| self.procs.get(&k)) {
                    Some(Proc {
                        stdio:
                            Stdio {
                                master: Some(master),
                                ..
                            },
                        ..
                    }) => answer(resize(master.as_raw_fd(), rows, cols)),
                    Some(_) => refuse(
                        Failure::BadRequest,
                        "the process has no terminal".into(),
                    ),
                    None => {
                        refuse(Failure::NotFound, "no such exec session".into())
                    }
                }
            }
            Request::Attach {
                stdin,
                stdout,
                stderr,
                close_stdin,
            } => {
                let role = Role::Attached {
                    proc: INIT,
                    stdin,
                    stdout,
                    stderr,
                    close_stdin,
                };
                self.attach(i, INIT, role);
                return Ok(None);
            }
            Request::Exec {
                id: name,
                process,
                tty,
                stdin,
                stdout,
                stderr,
            } => {
                if status != Status::Running {
                    refuse(
                        Failure::Conflict,
                        "the container is not running".into(),
                    )
                } else if self.exec_key(&name).is_some() {
                    refuse(
                        Failure::Conflict,
                        format!("exec session {name} exists"),
                    )
                } else {
                    match self.exec(name, &process, tty, stdin) {
                        Ok(key) if stdout || stderr || stdin => {
                            let role = Role::Attached {
                                proc: key,
                                stdin,
                                stdout,
                                stderr,
                                close_stdin: true,
                            };
                            self.attach(i, key, role);
                            return Ok(None);
                        }
                        Ok(_) => Reply::Ok,
                        Err(e) => answer(Err(e)),
                    }
                }
            }
            Request::Wait => {
                let client = &mut self.clients[i];
                let init = &self.procs[&INIT];
                match (&init.exit, init.told) {
                    (Some(exit), true) => {
                        client.reply(&Reply::Exited(exit.clone()));
                        client.role = Role::Closing;
                    }
                    _ => client.role = Role::Waiting,
                }
                return Ok(None);
            }
            Request::Pids => match status {
                Status::Created | Status::Running => {
                    match self
                        .runtime
                        .query("ps", &["ps", "--format", "json", &id])
                    {
                        Ok(out) => {
                            match serde_json::from_slice::<Vec<i32>>(&out) {
                                Ok(pids) => Reply::Pids { pids },
                                Err(e) => refuse(
                                    Failure::Runtime,
                                    format!(
                                        "runtime ps printed no pid list: {e}"
                                    ),
                                ),
                            }
                        }
                        Err(e) => answer(Err(e)),
                    }
                }
                Status::Stopped => refuse(
                    Failure::Conflict,
                    "the container is not running".into(),
                ),
            },
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

    fn exec_key(&self, name: &str) -> Option<u64> {
        self.procs
            .iter()
            .find(|(_, p)| p.exec.as_deref() == Some(name))
            .map(|(&key, _)| key)
    }

    /// `runtime exec --detach` of `process` (the runtime spec's), with
    /// its stdio held here; the new session's key. The oldest finished
    /// session beyond [`MAX_EXECS`] is forgotten.
    fn exec(
        &mut self,
        name: String,
        process: &serde_json::Value,
        tty: bool,
        stdin: bool,
    ) -> Result<u64, Error> {
        let key = self.next_key;
        self.next_key += 1;
        let dir = &self.options.dir;
        let spec = dir.join(format!("exec-{key}.json"));
        let bytes = serde_json::to_vec(process).unwrap_or_default();
        fs::write(&spec, bytes).map_err(path_io::at("write", &spec))?;
        let args = vec![
            "exec".into(),
            "--detach".into(),
            "--process".into(),
            spec.to_string_lossy().into_owned(),
        ];
        let ran = run_with_stdio(
            &self.runtime,
            "exec",
            args,
            &self.options.id,
            tty,
            stdin,
            dir,
        );
        let _ = fs::remove_file(&spec);
        let (pid, stdio) = ran?;
        self.procs.insert(
            key,
            Proc {
                exec: Some(name),
                pid,
                tty,
                started: true,
                stdio,
                exit: None,
                drain_until: None,
                told: false,
            },
        );
        let sessions = self.procs.len() - 1;
        if sessions > MAX_EXECS {
            let attached: Vec<u64> = self
                .clients
                .iter()
                .filter_map(|c| match c.role {
                    Role::Attached { proc, .. } => Some(proc),
                    _ => None,
                })
                .collect();
            let oldest = self
                .procs
                .iter()
                .find(|(k, p)| **k != INIT && p.told && !attached.contains(k))
                .map(|(&k, _)| k);
            if let Some(oldest) = oldest {
                self.procs.remove(&oldest);
            }
        }
        Ok(key)
    }

    /// After `delete`: reap a first process that never ran, send every
    /// client what it is owed (the attachers may still hold the end of
    /// the output, the deleting client its reply; blocking now, at most
    /// [`FLUSH`] each: it is the last thing the shim does), and remove
    /// the socket and pid file. The log and the exit record stay for the
    /// daemon, which owns the directory.
    fn finish(&mut self, i: usize) {
        let init = &self.procs[&INIT];
        if init.exit.is_none() {
            // `delete --force` killed it; it is our child.
            let _ = waitpid(init.pid, None);
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
    /// Reap every child that has exited; the exit of a process the shim
    /// holds is recorded (the first process's also on disk, atomically).
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
            let Some((&key, proc)) = self
                .procs
                .iter_mut()
                .find(|(_, p)| p.pid == pid && p.exit.is_none())
            else {
                continue;
            };
            let exit = Exit {
                pid: pid.as_raw(),
                code,
                signal,
                at: crate::time::rfc3339(SystemTime::now()),
            };
            proc.exit = Some(exit.clone());
            proc.drain_until = Some(Instant::now() + DRAIN);
            if key == INIT {
                let bytes = serde_json::to_vec(&exit).unwrap_or_default();
                let path = self.options.dir.join(EXIT_FILE);
                if let Err(e) = path_io::replace_durably(&path, &bytes, 0o600) {
                    self.warn(&crate::child::error_chain(&e));
                }
            }
        }
    }
    // ANCHOR_END: reap
}

/// Close `proc`'s stdin (its client ended its input).
fn close_stdin_of(proc: &mut Proc) {
    // With a pty, stdin is the master: closing it would hang the
    // terminal up. End-of-input is Ctrl-D, which the client sends.
    if !proc.tty {
        proc.stdio.stdin = None;
    }
    proc.stdio.stdin_closing = false;
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

/// `RUNTIME ARGS… --pid-file P [--console-socket S] ID` with the new
/// process's stdio (pipes, or the pty that arrives on the console
/// socket), to its end; the process's pid and the shim's ends of its
/// stdio. For `create`, the process is then the shim's child: orphaned
/// when the runtime exits, it is reparented to its subreaper. Whatever
/// fails once the runtime has succeeded deletes what it made (for
/// `create`), or its process would wait on its exec fifo for ever.
fn run_with_stdio(
    runtime: &Runtime,
    op: &'static str,
    mut args: Vec<String>,
    id: &str,
    tty: bool,
    stdin: bool,
    dir: &std::path::Path,
) -> Result<(Pid, Stdio), Error> {
    let pid_file = dir.join(if op == "create" {
        "init.pid"
    } else {
        "exec.pid"
    });
    let _ = fs::remove_file(&pid_file);
    args.push("--pid-file".into());
    args.push(pid_file.to_string_lossy().into_owned());
    let console = dir.join(format!("{op}-console.sock"));
    let (plan, child) = Plan::new(tty, stdin, &console, &mut args)?;
    args.push(id.to_owned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = runtime.command(&arg_refs);
    Plan::apply(&mut command, child);
    let mark = log_size(&runtime.log);
    let spawned = runtime.spawn(op, &mut command);
    // Our copies of the process's ends go: only it holds them, so its
    // exit is our end-of-file.
    drop(command);
    let status = spawned.and_then(|mut child| {
        child.wait().map_err(|source| Error::Spawn {
            runtime: runtime.path.clone(),
            op,
            source,
        })
    });
    let ran = status.and_then(|status| runtime.check(op, status, mark, ""));
    if let Err(e) = ran {
        plan.abandon();
        if op == "create" {
            // Whatever the runtime left half made.
            let _ = runtime.run("delete", &["delete", "--force", id]);
        }
        return Err(e);
    }
    let finished = plan.finish().and_then(|stdio| {
        let pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 0)
            .map(Pid::from_raw)
            .ok_or_else(|| Error::PidFile(pid_file.clone()))?;
        Ok((pid, stdio))
    });
    if finished.is_err() && op == "exec" {
        // The session's process runs, with nobody to hold its stdio:
        // it goes, if its pid can be read.
        if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if finished.is_err() && op == "create" {
        let _ = runtime.run("delete", &["delete", "--force", id]);
    }
    finished
}
