//! `pivot_root(2)` with nothing around it: a new mount namespace, made
//! private, the rootfs bound onto itself, the pivot, the old root detached,
//! then `COMMAND` runs with the rootfs as `/`. Chapter 3 shows it before
//! the plan and the hardened `mount::enter`.
//!
//! ```sh
//! sudo target/debug/examples/bare_pivot_root target/rootfs ls /
//! ```

use std::env;
use std::ffi::CString;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{chdir, execvp, pivot_root};

/// No source, filesystem type or data: `mount(2)`'s `NULL`.
const NONE: Option<&str> = None;

// ANCHOR: bare_pivot_root
fn main() -> nix::Result<()> {
    let args: Vec<CString> = env::args()
        .skip(1)
        .map(|a| CString::new(a).expect("argv has no NUL"))
        .collect();
    let [rootfs, program, ..] = &args[..] else {
        panic!("usage: bare_pivot_root ROOTFS COMMAND [ARG...]");
    };
    unshare(CloneFlags::CLONE_NEWNS)?; // our own copy of the mount table
    // Private, so that no mount event travels to or from the host.
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)?;
    // pivot_root(2) wants a mount point: bind the rootfs onto itself.
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(rootfs.as_c_str()), rootfs.as_c_str(), NONE, bind, NONE)?;
    chdir(rootfs.as_c_str())?; // into the new mount
    pivot_root(".", ".")?; // the old root is now stacked on top, at "/"
    umount2(".", MntFlags::MNT_DETACH)?; // and detached: the host is gone
    chdir("/")?;
    match execvp(program, &args[1..])? {}
}
// ANCHOR_END: bare_pivot_root
