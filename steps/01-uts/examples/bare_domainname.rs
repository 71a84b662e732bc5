//! Chapter 1, exercise 1: `bare_uts` with the UTS namespace's other string,
//! the NIS domain name, set too (`setdomainname(2)`; nix has no wrapper).
//!
//! ```sh
//! sudo target/debug/examples/bare_domainname   # box, then example.org
//! ```

use nix::errno::Errno;
use nix::sched::{CloneFlags, clone};
use nix::sys::wait::waitpid;
use nix::unistd::{execvp, sethostname};

// ANCHOR: set_domainname
/// `setdomainname(2)`: like `sethostname(2)`, only in the UTS namespace of
/// the caller.
fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe `name`, which outlives the
    // call; the kernel copies the bytes and needs no NUL.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(rc).map(drop)
}
// ANCHOR_END: set_domainname

fn main() -> nix::Result<()> {
    let mut stack = vec![0u8; 1024 * 1024];
    // ANCHOR: child
    let child = Box::new(|| {
        if sethostname("box").is_err() || set_domainname("example.org").is_err()
        {
            return 125;
        }
        let argv = [
            c"cat",
            c"/proc/sys/kernel/hostname",
            c"/proc/sys/kernel/domainname",
        ];
        let _ = execvp(argv[0], &argv);
        127
    });
    // ANCHOR_END: child
    let flags = CloneFlags::CLONE_NEWUTS;
    // SAFETY: one thread, and no CLONE_VM: like fork(2), the child gets a
    // copy of our memory, `stack` included, and runs on that copy.
    let pid = unsafe { clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }?;
    waitpid(pid, None)?;
    Ok(())
}
