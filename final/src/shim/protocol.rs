//! What goes over the shim's socket: one JSON request per connection, one
//! JSON reply, and for `attach` the container's stdio after the reply.
//!
//! ```text
//!   client                                  shim
//!   {"op":"state"}\n              ──────▶
//!                                 ◀──────   {"reply":"state","pid":42,…}\n
//!
//!   {"op":"attach","stdin":true,…}\n ───▶
//!                                 ◀──────   {"reply":"ok"}\n
//!   stdin bytes …                 ──────▶   (to the container's stdin)
//!   shutdown(SHUT_WR)             ──────▶   (stdin closed, if close_stdin)
//!                                 ◀──────   [1,0,0,0,len…] stdout bytes  (no tty)
//!                                 ◀──────   [2,0,0,0,len…] stderr bytes
//!                                 ◀──────   EOF once the output has ended
//! ```
//!
//! Without a terminal the output comes in the Docker Engine API's
//! multiplexed frames ([`frame_header`]): the daemon copies them to a
//! hijacked `attach` connection as they are. With a terminal it is the
//! raw byte stream of the pty, as Docker sends it too.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// The longest request line the shim reads; longer ones are refused.
pub const MAX_REQUEST: usize = 64 * 1024;

// ANCHOR: request
/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The container's pid, status and exit.
    State,
    /// `runtime start`: run the process that `create` set up.
    Start,
    /// `runtime kill [--all] ID SIGNAL`.
    Kill {
        /// The signal's number.
        signal: i32,
        /// To every process of the container, not only its first.
        #[serde(default)]
        all: bool,
    },
    /// The terminal's new size (`TIOCSWINSZ`), with a terminal only.
    Resize {
        /// Lines.
        rows: u16,
        /// Columns.
        cols: u16,
        /// The exec session's terminal rather than the container's.
        #[serde(default)]
        exec: Option<String>,
    },
    /// `runtime exec --detach`: start another process in the container,
    /// its stdio held by the shim like the first one's (not logged). With
    /// `stdout` or `stderr`, the connection then carries its stdio, as
    /// after [`Request::Attach`].
    Exec {
        /// The daemon's name for the session.
        id: String,
        /// The runtime spec's `process` (its `terminal` must match `tty`).
        process: serde_json::Value,
        /// A pty as its stdio.
        #[serde(default)]
        tty: bool,
        /// Forward what this client sends to its stdin.
        #[serde(default)]
        stdin: bool,
        /// Send its stdout.
        #[serde(default)]
        stdout: bool,
        /// Send its stderr.
        #[serde(default)]
        stderr: bool,
    },
    /// An exec session's pid, status and exit.
    ExecState {
        /// The daemon's name for it.
        id: String,
    },
    /// Stream the container's stdio over this connection.
    Attach {
        /// Forward what the client sends to the container's stdin.
        #[serde(default)]
        stdin: bool,
        /// Send the container's stdout.
        #[serde(default)]
        stdout: bool,
        /// Send the container's stderr.
        #[serde(default)]
        stderr: bool,
        /// Close the container's stdin when this client closes its side
        /// (Docker's `StdinOnce`: `docker run -i` ends the input with
        /// Ctrl-D).
        #[serde(default)]
        close_stdin: bool,
    },
    /// Answer once the container has exited and its output has ended.
    Wait,
    /// `runtime ps --format json`: the host pids of the container's
    /// processes.
    Pids,
    /// `runtime pause`: freeze every process of the container.
    Pause,
    /// `runtime resume`: thaw them.
    Resume,
    /// `runtime delete --force`, then the shim exits: the daemon has
    /// collected the exit status.
    Delete,
}
// ANCHOR_END: request

/// What a container's first process is doing, as the shim sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, not started.
    Created,
    /// Started, not yet reaped.
    Running,
    /// Reaped: there is an [`Exit`].
    Stopped,
}

/// How a container's first process ended (the shim's `exit.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its pid, as the host saw it.
    pub pid: i32,
    /// Docker's exit code: the status it exited with, or 128 + the
    /// signal that killed it.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// When the shim reaped it (RFC 3339, UTC).
    pub at: String,
}

/// Why a request failed, for the daemon to choose its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The request cannot apply now (starting a running container,
    /// killing a stopped one): Docker's 409.
    Conflict,
    /// The request itself is wrong (unparsable, too long).
    BadRequest,
    /// It names an exec session the shim does not have.
    NotFound,
    /// The runtime, or a system call, failed.
    Runtime,
}

/// The shim's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Done.
    Ok,
    /// The answer to [`Request::State`].
    State {
        /// The container's first process, as the host sees it.
        pid: i32,
        /// What it is doing.
        status: Status,
        /// How it ended, once it has.
        exit: Option<Exit>,
    },
    /// The answer to [`Request::Wait`].
    Exited(Exit),
    /// The answer to [`Request::Pids`].
    Pids {
        /// Host pids.
        pids: Vec<i32>,
    },
    /// The request failed.
    Error {
        /// Why, in kind.
        failure: Failure,
        /// Why, in one line.
        message: String,
    },
}

/// The stream a frame of attached output belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdin (Docker's stream 0, never sent here).
    Stdin = 0,
    /// The container's stdout.
    Stdout = 1,
    /// The container's stderr.
    Stderr = 2,
}

impl Stream {
    /// The name in a json-file log record.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdin => "stdin",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

// ANCHOR: frame_header
/// The 8-byte header of one frame of the Docker Engine API's multiplexed
/// stream: the stream, three zero bytes, the payload's length (big
/// endian). `len` is at most `u32::MAX`; the shim's chunks are far
/// smaller.
pub fn frame_header(stream: Stream, len: u32) -> [u8; 8] {
    let [a, b, c, d] = len.to_be_bytes();
    [stream as u8, 0, 0, 0, a, b, c, d]
}
// ANCHOR_END: frame_header

/// Read one frame of a multiplexed stream: `None` at a clean end between
/// frames; an error for an unknown stream or a frame cut short.
pub fn read_frame(
    reader: &mut impl Read,
) -> io::Result<Option<(Stream, Vec<u8>)>> {
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        match reader.read(&mut header[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let stream = match header[0] {
        0 => Stream::Stdin,
        1 => Stream::Stdout,
        2 => Stream::Stderr,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of unknown stream {other}"),
            ));
        }
    };
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let mut payload = vec![0; len as usize];
    reader.read_exact(&mut payload)?;
    Ok(Some((stream, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_tagged_json_and_unknown_fields_are_refused() {
        let kill: Request =
            serde_json::from_str(r#"{"op":"kill","signal":9}"#).unwrap();
        assert_eq!(
            kill,
            Request::Kill {
                signal: 9,
                all: false
            }
        );
        assert!(
            serde_json::from_str::<Request>(
                r#"{"op":"kill","signal":9,"x":1}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }

    #[test]
    fn frames_round_trip_and_a_cut_frame_is_an_error() {
        let mut bytes = frame_header(Stream::Stderr, 3).to_vec();
        bytes.extend_from_slice(b"hi\n");
        assert_eq!(&bytes[..8], &[2, 0, 0, 0, 0, 0, 0, 3]);
        let mut reader = &bytes[..];
        let frame = read_frame(&mut reader).unwrap();
        assert_eq!(frame, Some((Stream::Stderr, b"hi\n".to_vec())));
        assert_eq!(read_frame(&mut reader).unwrap(), None);
        assert!(read_frame(&mut &bytes[..5]).is_err());
        assert!(read_frame(&mut &[7u8, 0, 0, 0, 0, 0, 0, 0][..]).is_err());
    }
}
