//! Before the C library: the re-execution of `create`, `run` and `exec`
//! from a read-only clone of the binary (step 8's `oci::exe`), done at the
//! binary's entry point, before glibc and Rust's runtime set themselves up.
//!
//! Why: that set-up is paid twice by every command that re-executes, and
//! the first time for nothing, since the process is replaced at once.
//! glibc's part is the larger one on a virtual machine: it asks the CPU
//! about its features and caches with `cpuid`, dozens of times, and each
//! `cpuid` traps to the hypervisor (3.7 to 6.6 µs each here, depending
//! on the host's load: 0.2 to 0.5 ms per start in all). So `build.rs` makes [`berth_runtime_entry`]
//! the binary's entry point; it looks at the arguments the kernel left on
//! the stack and either re-executes at once or jumps to the C library's
//! `_start` as if nothing had happened.
//!
//! The rules of code that runs before the C library:
//!
//! - raw system calls only (`asm!`), no function of libc: in a static
//!   binary, even `memcpy` is resolved by glibc's start-up (IFUNC), and
//!   there is no thread-local storage, so no `errno` either;
//! - nothing that can panic or allocate: raw pointers, and indexing
//!   only with constants into arrays (checked when compiled);
//! - nothing that needs a relocation (a function pointer in a static, an
//!   address in a table): a static-PIE binary is relocated by glibc's
//!   start-up too; code and strings reached relative to the instruction
//!   pointer are fine;
//! - any failure returns to the normal start, where `cli::main` checks
//!   again and re-executes the portable way ([`reexec_read_only`], with
//!   the sealed copy as its fallback), or reports the error in the log.
//!
//! On other architectures the entry point is the C library's, and
//! `cli::main` does all of it.
//!
//! [`reexec_read_only`]: step08_oci::oci::exe::reexec_read_only

/// The commands that make a process in a container, and so re-execute:
/// an argument equal to one of them is enough (here and in `cli::main`).
pub const MAKES_A_PROCESS: [&str; 3] = [CREATE, RUN, EXEC];

/// [`MAKES_A_PROCESS`] one by one, for the entry point, which may not
/// read a table of addresses (see the rules above): each name is then
/// an address relative to the instruction pointer.
const CREATE: &str = "create";
const RUN: &str = "run";
const EXEC: &str = "exec";

#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    target_pointer_width = "64"
))]
pub use x86_64::berth_runtime_entry;

#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    target_pointer_width = "64"
))]
mod x86_64 {
    use core::arch::{asm, naked_asm};
    use core::mem::MaybeUninit;
    use core::ptr::addr_of_mut;

    unsafe extern "C" {
        /// The C library's entry point (`crt1.o`).
        fn _start() -> !;
    }

    /// The binary's entry point. The kernel starts it with the stack as
    /// `execve(2)` left it (`argc`, then `argv`, then the environment)
    /// and, for a dynamically linked binary, the loader's exit function in
    /// `rdx`, which `_start` wants back unchanged (kept in `r12`, which
    /// [`early`] saves as the ABI says).
    ///
    /// # Safety
    ///
    /// Only ever called by the kernel, as the entry point.
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn berth_runtime_entry() -> ! {
        naked_asm!(
            "mov r12, rdx",
            "mov rdi, rsp",
            "call {early}",
            "mov rdx, r12",
            "jmp {start}",
            early = sym early,
            start = sym _start,
        )
    }

    /// A system call with up to five arguments.
    ///
    /// # Safety
    ///
    /// The arguments must be what system call `number` expects.
    unsafe fn syscall(number: i64, args: [usize; 5]) -> i64 {
        let result: i64;
        // SAFETY: the syscall instruction clobbers rcx and r11 only; the
        // caller vouches for the arguments.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") number => result,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                in("r8") args[4],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        result
    }

    /// Whether the NUL-terminated `arg` is `name`.
    ///
    /// # Safety
    ///
    /// `arg` points to a NUL-terminated string.
    unsafe fn is(arg: *const u8, name: &str) -> bool {
        let name = name.as_bytes();
        let mut i = 0;
        while i < name.len() {
            // SAFETY: the string goes on at least until its NUL, which
            // stops the comparison; `i` is within `name`.
            if unsafe { *arg.add(i) != *name.as_ptr().add(i) } {
                return false;
            }
            i += 1;
        }
        // SAFETY: every byte before this one matched a non-NUL byte.
        unsafe { *arg.add(name.len()) == 0 }
    }

    // ANCHOR: early
    /// Re-execute through a read-only clone of the binary if an argument
    /// names `create`, `run` or `exec` and the binary is not out of the
    /// container's reach already; return on anything else.
    ///
    /// # Safety
    ///
    /// `stack` is the process's initial stack pointer.
    unsafe extern "C" fn early(stack: *const usize) {
        // SAFETY: the initial stack holds argc, argc pointers and a NULL,
        // then the environment's pointers and a NULL.
        unsafe {
            let argc = *stack;
            let argv = stack.add(1) as *const *const u8;
            let envp = argv.add(argc + 1);
            let mut i = 1;
            let mut makes_a_process = false;
            while i < argc && !makes_a_process {
                let arg = *argv.add(i);
                makes_a_process = is(arg, super::CREATE)
                    || is(arg, super::RUN)
                    || is(arg, super::EXEC);
                i += 1;
            }
            if makes_a_process {
                reexec(argv, envp);
            }
        }
    }
    // ANCHOR_END: early

    /// What `oci::exe::reexec_read_only` does, in raw system calls.
    ///
    /// # Safety
    ///
    /// `argv` and `envp` are the process's, NULL-terminated.
    unsafe fn reexec(argv: *const *const u8, envp: *const *const u8) {
        let exe = c"/proc/self/exe".as_ptr() as usize;
        let empty = c"".as_ptr() as usize;
        let at_empty_path = libc::AT_EMPTY_PATH as usize;
        // SAFETY: each call gets the arguments its man page describes;
        // the buffers are ours and of the size the kernel writes.
        unsafe {
            let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as usize;
            let cwd = libc::AT_FDCWD as usize;
            let fd = syscall(libc::SYS_openat, [cwd, exe, flags, 0, 0]);
            if fd < 0 {
                return;
            }
            let close =
                |fd: i64| syscall(libc::SYS_close, [fd as usize, 0, 0, 0, 0]);
            // Out of reach already: a sealed copy, or a read-only mount
            // (the clone this very function executes through).
            let seals = syscall(
                libc::SYS_fcntl,
                [fd as usize, libc::F_GET_SEALS as usize, 0, 0, 0],
            );
            // The kernel's struct statfs on x86-64: 15 longs, f_flags the
            // eleventh (include/uapi/asm-generic/statfs.h).
            let mut fs = MaybeUninit::<[i64; 15]>::uninit();
            let statfs = syscall(
                libc::SYS_fstatfs,
                [fd as usize, fs.as_mut_ptr() as usize, 0, 0, 0],
            );
            // A failed fstatfs cannot tell the clone from the host's file:
            // that case is left to the portable path, which makes the
            // sealed copy at once.
            let read_only =
                statfs != 0 || (*fs.as_ptr())[10] & libc::ST_RDONLY as i64 != 0;
            if (seals >= 0 && seals & libc::F_SEAL_WRITE as i64 != 0)
                || read_only
            {
                close(fd);
                return;
            }
            let tree = libc::OPEN_TREE_CLONE as usize
                | libc::OPEN_TREE_CLOEXEC as usize
                | at_empty_path;
            let clone =
                syscall(libc::SYS_open_tree, [fd as usize, empty, tree, 0, 0]);
            close(fd);
            if clone < 0 {
                return;
            }
            let mut attr = MaybeUninit::<libc::mount_attr>::uninit();
            let a = attr.as_mut_ptr();
            addr_of_mut!((*a).attr_set).write(
                libc::MOUNT_ATTR_RDONLY
                    | libc::MOUNT_ATTR_NOSUID
                    | libc::MOUNT_ATTR_NODEV,
            );
            addr_of_mut!((*a).attr_clr).write(0);
            addr_of_mut!((*a).propagation).write(0);
            addr_of_mut!((*a).userns_fd).write(0);
            let size = core::mem::size_of::<libc::mount_attr>();
            let set = syscall(
                libc::SYS_mount_setattr,
                [clone as usize, empty, at_empty_path, a as usize, size],
            );
            if set == 0 {
                syscall(
                    libc::SYS_execveat,
                    [
                        clone as usize,
                        empty,
                        argv as usize,
                        envp as usize,
                        at_empty_path,
                    ],
                );
            }
            close(clone);
        }
    }
}
