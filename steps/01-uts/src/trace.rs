//! The runtime explains itself: when tracing is on, every kernel operation
//! that makes a container — `clone(2)` and its flags, each mount,
//! `pivot_root(2)`, each cgroup write, the uid/gid maps, the capability
//! sets, the seccomp filter, each hook, `execve(2)` — is one line on the
//! trace, naming the step (and so the book's chapter) that teaches it.
//!
//! Off by default, and then one relaxed atomic load per call: the line
//! is formatted only when it is on. Part II's
//! runtime turns it on (`berth-runtime --trace`, or `BERTH_TRACE` in its
//! environment: set in containerd's, it reaches the runtime through the
//! shims, which a test checks).
//! The trace is an fd: the container process writes to the same one
//! until its `execve` closes it (it is close-on-exec, and
//! [`crate::child::spawn_keeping`] keeps it across the child's fd purge).
//! Each event is one `write(2)` of one line, so the parent's and the
//! child's lines never mix within a line.

use std::fmt::Display;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The trace's fd, or -1 when tracing is off.
static FD: AtomicI32 = AtomicI32::new(-1);
/// Whether events are JSON lines rather than text.
static JSON: AtomicBool = AtomicBool::new(false);

/// The book's chapter file of each step.
const CHAPTERS: [&str; 9] = [
    "01-uts.md",
    "02-pid.md",
    "03-mount.md",
    "04-net.md",
    "05-user-ipc.md",
    "06-cgroups.md",
    "07-overlay.md",
    "08-oci-bundle.md",
    "09-runtime.md",
];

/// Turn tracing on: events go to `fd` (close-on-exec), as JSON lines
/// with `json`, else as text. For the life of the process.
pub fn enable(fd: OwnedFd, json: bool) {
    JSON.store(json, Ordering::Relaxed);
    let old = FD.swap(fd.into_raw_fd(), Ordering::Relaxed);
    if old >= 0 {
        // SAFETY: `old` was ours, from an earlier `enable`.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(old) });
    }
}

/// The trace's fd, while tracing is on (a child must keep it).
pub fn fd() -> Option<RawFd> {
    let fd = FD.load(Ordering::Relaxed);
    (fd >= 0).then_some(fd)
}

// ANCHOR: event
/// Record that step `step` does what `what` says (one line: the
/// operation and its arguments, as `strace(1)` would name them). `what`
/// is called only when tracing is on: when it is off, formatting the
/// line (capability names, id maps, flags) costs nothing.
pub fn event<D: Display>(step: u8, what: impl FnOnce() -> D) {
    let Some(fd) = fd() else {
        return;
    };
    let what = what();
    let chapter = CHAPTERS
        .get(usize::from(step).wrapping_sub(1))
        .copied()
        .unwrap_or("?");
    let line = if JSON.load(Ordering::Relaxed) {
        format!(
            "{}\n",
            json_line(step, chapter, &what.to_string(), monotonic_us())
        )
    } else {
        format!("[step {step} · {chapter}] {what}\n")
    };
    // SAFETY: `fd` is the trace's, open for the life of the process; the
    // buffer is `line`'s. One write: a line is never split by another's.
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}
// ANCHOR_END: event

/// One JSON object, written by hand: step 1 has no JSON library, and the
/// fields are two strings and two numbers. `us` is the monotonic clock in
/// microseconds, the same clock in every process, so the differences
/// between lines show where the time of a container's start goes.
fn json_line(step: u8, chapter: &str, what: &str, us: u64) -> String {
    format!(
        "{{\"step\":{step},\"chapter\":{},\"event\":{},\"us\":{us}}}",
        quote(chapter),
        quote(what)
    )
}

/// `CLOCK_MONOTONIC` in microseconds.
fn monotonic_us() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to fill; CLOCK_MONOTONIC exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

/// `text` as a JSON string.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                quoted.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_json_needs() {
        assert_eq!(quote("a \"b\"\n\\\u{1}"), r#""a \"b\"\n\\\u0001""#);
        assert_eq!(
            json_line(3, "03-mount.md", "pivot_root .", 17),
            r#"{"step":3,"chapter":"03-mount.md","event":"pivot_root .","us":17}"#
        );
    }
}
