//! The UTS namespace with nothing around it: `clone(2)` a child into a new
//! UTS namespace, rename it there with `sethostname(2)`, and run
//! `hostname`. Chapter 1 shows it before the hardened `child` module.
//!
//! ```sh
//! sudo target/debug/examples/bare_uts   # "box"; the host keeps its name
//! ```

use nix::sched::{CloneFlags, clone};
use nix::sys::wait::waitpid;
use nix::unistd::{execvp, sethostname};

// ANCHOR: bare_uts
fn main() -> nix::Result<()> {
    let mut stack = vec![0u8; 1024 * 1024];
    // The child's code. clone(2) starts it in a new UTS namespace, so
    // sethostname(2) renames that namespace, not the host.
    let child = Box::new(|| {
        if sethostname("box").is_err() {
            return 125;
        }
        let _ = execvp(c"hostname", &[c"hostname"]); // only returns on error
        127
    });
    let flags = CloneFlags::CLONE_NEWUTS;
    // SAFETY: one thread, and no CLONE_VM: like fork(2), the child gets a
    // copy of our memory, `stack` included, and runs on that copy.
    let pid = unsafe { clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }?;
    waitpid(pid, None)?;
    Ok(())
}
// ANCHOR_END: bare_uts
