//! `openat2(2)` with `RESOLVE_IN_ROOT`, next to a plain `openat(2)`: open
//! `PATH` relative to the directory `ROOT`, and print where each call
//! really ended up. Chapter 3 shows it before `mount::open_in_root`.
//!
//! ```sh
//! target/debug/examples/bare_openat2 /tmp/berth-bare-root abs
//! ```

use std::env;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::Mode;

// ANCHOR: bare_openat2
fn main() -> nix::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let [root, path] = &args[..] else {
        panic!("usage: bare_openat2 ROOT PATH");
    };
    let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    let dir = OFlag::O_DIRECTORY;
    let root = open(root.as_str(), flags | dir, Mode::empty())?;
    // openat(2): `..` and absolute symlinks in PATH can lead out of ROOT.
    let plain = openat(&root, path.as_str(), flags, Mode::empty());
    show("openat ", plain);
    // openat2(2) with RESOLVE_IN_ROOT: PATH is resolved as if ROOT were /.
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    show("openat2", openat2(&root, path.as_str(), how));
    Ok(())
}
// ANCHOR_END: bare_openat2

/// Print where `fd` leads: the kernel's name for it in `/proc/self/fd`.
fn show(call: &str, fd: nix::Result<OwnedFd>) {
    let name = |fd: OwnedFd| {
        nix::fcntl::readlink(
            format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        )
    };
    match fd.and_then(name) {
        Ok(path) => println!("{call} -> {}", path.to_string_lossy()),
        Err(errno) => println!("{call} -> {errno}"),
    }
}
