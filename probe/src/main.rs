//! `probe [SECTION...]`: print what a container looks like from inside, as
//! stable text for snapshot tests.
//!
//! Sections (default: `hostname pid ids ns mounts cgroup`):
//!
//! - `hostname`: the UTS hostname;
//! - `pid`: `getpid()`, `getppid()`, and the pid `/proc/self` names (they
//!   differ when `/proc` belongs to another PID namespace);
//! - `pids`: the pids listed in `/proc` (a count when there are many);
//! - `ids`: uid, gid, and the uid/gid maps of the user namespace;
//! - `ns`: each namespace as `new` or `host`, compared with the inode
//!   numbers the test passes in `PROBE_HOST_NS` (`uts=4026531838,pid=…`);
//! - `caps`: the capability sets, from `/proc/self/status`;
//! - `limits`: the soft and hard `RLIMIT_NOFILE` and `RLIMIT_NPROC`, and
//!   `no_new_privs`;
//! - `signals`: the blocked (`SigBlk`) and ignored (`SigIgn`) signal masks;
//! - `fds`: the open file descriptors (only stdio, in a sound container);
//! - `mounts`: mount point, type and options from `/proc/self/mountinfo`;
//! - `network`: interfaces (up or down, IPv4 addresses) and IPv4 routes;
//! - `ipc`: the keys of the System V shared memory segments and message
//!   queues visible (the IPC namespace's table);
//! - `ipc-make KEY` / `ipc-remove KEY` (actions, not sections): create or
//!   remove a shared memory segment and a message queue with key `KEY`
//!   (hex), for the IPC tests;
//! - `alloc MIB` (an action): allocate and touch MIB mebibytes, for the
//!   memory limit tests;
//! - `cgroup`: membership from `/proc/self/cgroup`, and the limits visible
//!   under `/sys/fs/cgroup`;
//! - `chroot-escape`: try the classic escape from `chroot(2)` (needs
//!   `CAP_SYS_CHROOT`) and say whether it reached another root.
//!
//! The probe is built with glibc's `crt-static`, so it runs in any rootfs.
//! It prints `probe: ...` to stderr and exits 1 on an unknown section.
//!
//! It has a C `main` (`#![no_main]`): Rust's own start-up code would set
//! `SIGPIPE` to ignored before `main`, and the `signals` section must show
//! the dispositions the probe was *given*.

#![no_main]

use std::collections::BTreeMap;
use std::env;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::parent_id;

/// Namespaces in the order they are printed.
const NAMESPACES: [&str; 8] =
    ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

/// Above this many processes, `pids` prints a count instead of a list.
const MAX_LISTED_PIDS: usize = 16;

/// The C entry point: no Rust start-up code runs before it (see the
/// crate docs); `std::env::args` still works, glibc hands it the arguments.
#[unsafe(no_mangle)]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    let code = run();
    let _ = io::stdout().flush();
    code
}

fn run() -> std::ffi::c_int {
    let mut sections: Vec<String> = env::args().skip(1).collect();
    if sections.is_empty() {
        sections = ["hostname", "pid", "ids", "ns", "mounts", "cgroup"]
            .map(String::from)
            .to_vec();
    }
    let mut out = String::new();
    let mut args = sections.iter();
    while let Some(section) = args.next() {
        let text = match section.as_str() {
            "ipc-make" | "ipc-remove" => {
                let key = args.next().and_then(|k| {
                    i32::from_str_radix(k.trim_start_matches("0x"), 16).ok()
                });
                let Some(key) = key else {
                    eprintln!("probe: {section} needs a hex KEY");
                    return 1;
                };
                match ipc_action(section == "ipc-make", key) {
                    Ok(text) => text,
                    Err(error) => {
                        eprintln!("probe: {section} {key:#x}: {error}");
                        return 1;
                    }
                }
            }
            "alloc" => {
                let Some(mib) =
                    args.next().and_then(|m| m.parse::<usize>().ok())
                else {
                    eprintln!("probe: alloc needs a number of MiB");
                    return 1;
                };
                alloc(mib)
            }
            "ipc" => ipc(),
            "hostname" => hostname(),
            "pid" => pid(),
            "pids" => pids(),
            "ids" => ids(),
            "ns" => namespaces(),
            "mounts" => mounts(),
            "caps" => caps(),
            "limits" => limits(),
            "signals" => status(&["SigBlk", "SigIgn"]),
            "fds" => fds(),
            "network" => network(),
            "cgroup" => cgroup(),
            "chroot-escape" => chroot_escape(),
            "syscalls" => syscalls(),
            other => {
                eprintln!("probe: unknown section {other:?}");
                return 1;
            }
        };
        out.push_str(&text);
    }
    let _ = io::stdout().write_all(out.as_bytes());
    0
}

/// The system calls a seccomp profile decides about, each tried with
/// arguments that do nothing (or fail) whatever is allowed: `(name,
/// number, arguments)`. Argument-conditioned rules of the common default
/// profiles are covered: `clone` and `unshare` with namespace flags,
/// `personality` with and without a known persona, `socket` families.
const SYSCALLS: &[(&str, libc::c_long, [libc::c_long; 5])] = &[
    ("acct", libc::SYS_acct, [0; 5]),
    ("add_key", libc::SYS_add_key, [0; 5]),
    ("bpf", libc::SYS_bpf, [-1, 0, 0, 0, 0]),
    ("chroot", libc::SYS_chroot, [0; 5]),
    ("clock_settime", libc::SYS_clock_settime, [0, 0, 0, 0, 0]),
    (
        "clone(CLONE_NEWNS)",
        libc::SYS_clone,
        [0x0002_0000 | 17, 0, 0, 0, 0],
    ),
    (
        "clone(CLONE_NEWUSER)",
        libc::SYS_clone,
        [0x1000_0000 | 17, 0, 0, 0, 0],
    ),
    ("clone(plain)", libc::SYS_clone, [17, 0, 0, 0, 0]),
    ("delete_module", libc::SYS_delete_module, [0; 5]),
    ("finit_module", libc::SYS_finit_module, [-1, 0, 0, 0, 0]),
    ("get_mempolicy", libc::SYS_get_mempolicy, [0; 5]),
    ("init_module", libc::SYS_init_module, [0; 5]),
    ("ioperm", libc::SYS_ioperm, [0; 5]),
    ("iopl", libc::SYS_iopl, [0; 5]),
    ("kexec_load", libc::SYS_kexec_load, [0; 5]),
    ("keyctl", libc::SYS_keyctl, [0, -3, 0, 0, 0]),
    ("lookup_dcookie", libc::SYS_lookup_dcookie, [0; 5]),
    ("mbind", libc::SYS_mbind, [0; 5]),
    ("mount", libc::SYS_mount, [0; 5]),
    ("move_pages", libc::SYS_move_pages, [0; 5]),
    (
        "name_to_handle_at",
        libc::SYS_name_to_handle_at,
        [-1, 0, 0, 0, 0],
    ),
    (
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        [-1, 0, 0, 0, 0],
    ),
    ("perf_event_open", libc::SYS_perf_event_open, [0; 5]),
    ("personality(0)", libc::SYS_personality, [0, 0, 0, 0, 0]),
    (
        "personality(query)",
        libc::SYS_personality,
        [0xffff_ffff, 0, 0, 0, 0],
    ),
    ("personality(0x4)", libc::SYS_personality, [0x4, 0, 0, 0, 0]),
    ("pivot_root", libc::SYS_pivot_root, [0; 5]),
    ("ptrace", libc::SYS_ptrace, [-1, 0, 0, 0, 0]),
    ("quotactl", libc::SYS_quotactl, [0; 5]),
    ("reboot", libc::SYS_reboot, [0; 5]),
    ("request_key", libc::SYS_request_key, [0; 5]),
    ("set_mempolicy", libc::SYS_set_mempolicy, [0; 5]),
    ("setns", libc::SYS_setns, [-1, 0, 0, 0, 0]),
    ("settimeofday", libc::SYS_settimeofday, [0; 5]),
    ("socket(AF_INET)", libc::SYS_socket, [2, 1, 0, 0, 0]),
    (
        "socket(AF_NETLINK audit)",
        libc::SYS_socket,
        [16, 3, 9, 0, 0],
    ),
    ("socket(AF_VSOCK)", libc::SYS_socket, [40, 1, 0, 0, 0]),
    // The same family with junk in the register's high half: the kernel
    // reads an int (AF_VSOCK), a filter all 64 bits.
    (
        "socket(AF_VSOCK, high bits set)",
        libc::SYS_socket,
        [0x1_0000_0028, 1, 0, 0, 0],
    ),
    ("swapoff", libc::SYS_swapoff, [0; 5]),
    ("swapon", libc::SYS_swapon, [0; 5]),
    ("syslog", libc::SYS_syslog, [10, 0, 0, 0, 0]),
    ("umount2", libc::SYS_umount2, [0; 5]),
    (
        "unshare(CLONE_NEWNS)",
        libc::SYS_unshare,
        [0x0002_0000, 0, 0, 0, 0],
    ),
    (
        "unshare(CLONE_NEWUSER)",
        libc::SYS_unshare,
        [0x1000_0000, 0, 0, 0, 0],
    ),
    ("userfaultfd", libc::SYS_userfaultfd, [0; 5]),
    ("vhangup", libc::SYS_vhangup, [0; 5]),
];

/// Try every system call of [`SYSCALLS`], each in a child of its own (a
/// call that succeeds may change the process: `unshare`, `personality`),
/// and print what it returned: `ok` or the errno's name.
fn syscalls() -> String {
    let mut out = String::new();
    for (name, number, args) in SYSCALLS {
        // SAFETY: the probe is single-threaded; the child makes one raw
        // syscall and _exits with its errno.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: every argument is a plain integer or a null pointer
            // the kernel checks; a `clone` that succeeds returns 0 in a
            // grandchild, which leaves at once.
            let rc = unsafe {
                libc::syscall(
                    *number, args[0], args[1], args[2], args[3], args[4],
                )
            };
            let code = if rc < 0 {
                io::Error::last_os_error().raw_os_error().unwrap_or(255)
            } else {
                0
            };
            // SAFETY: _exit ends the child without running anything else.
            unsafe { libc::_exit(code.min(255)) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let verdict = if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            match libc::WEXITSTATUS(status) {
                0 => "ok".to_owned(),
                errno => errno_name(errno),
            }
        };
        out.push_str(&format!("{name}: {verdict}\n"));
    }
    out
}

/// The symbolic name of `errno`, for the common ones.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESRCH => "ESRCH",
        libc::ENODEV => "ENODEV",
        libc::EBUSY => "EBUSY",
        libc::ENOTDIR => "ENOTDIR",
        libc::EEXIST => "EEXIST",
        libc::EIO => "EIO",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

/// A file's content without its trailing newline, or the error as text.
fn read(path: &str) -> String {
    match fs::read_to_string(path) {
        Ok(text) => text.trim_end().to_owned(),
        Err(error) => format!("<{path}: {error}>"),
    }
}

fn hostname() -> String {
    format!("hostname: {}\n", read("/proc/sys/kernel/hostname"))
}

fn pid() -> String {
    let proc_self = fs::read_link("/proc/self")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("<{e}>"));
    format!(
        "pid: {}\nppid: {}\n/proc/self: {proc_self}\n",
        std::process::id(),
        parent_id()
    )
}

fn pids() -> String {
    let mut pids: Vec<u32> = match fs::read_dir("/proc") {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(error) => return format!("pids: <{error}>\n"),
    };
    pids.sort_unstable();
    if pids.len() > MAX_LISTED_PIDS {
        format!("pids: {} processes\n", pids.len())
    } else {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        format!("pids: {}\n", list.join(" "))
    }
}

fn ids() -> String {
    // SAFETY: getuid(2) and getgid(2) cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let map = |path| {
        read(path)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    format!(
        "uid: {uid}\ngid: {gid}\nuid_map: {}\ngid_map: {}\n",
        map("/proc/self/uid_map"),
        map("/proc/self/gid_map")
    )
}

fn namespaces() -> String {
    let host: BTreeMap<String, String> = env::var("PROBE_HOST_NS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut out = String::from("namespaces:");
    for ns in NAMESPACES {
        let mine = fs::metadata(format!("/proc/self/ns/{ns}"))
            .map(|m| m.ino().to_string());
        let verdict = match (mine, host.get(ns)) {
            (Err(_), _) => "absent".to_owned(),
            (Ok(mine), Some(host)) if &mine == host => "host".to_owned(),
            (Ok(_), Some(_)) => "new".to_owned(),
            (Ok(mine), None) => mine,
        };
        out.push_str(&format!(" {ns}={verdict}"));
    }
    out.push('\n');
    out
}

/// Lines of `/proc/self/status` with one of `keys`, as `key: value`.
fn status(keys: &[&str]) -> String {
    let mut out = String::new();
    for line in read("/proc/self/status").lines() {
        if let Some((key, value)) = line.split_once(':')
            && keys.contains(&key)
        {
            out.push_str(&format!("{key}: {}\n", value.trim()));
        }
    }
    out
}

fn caps() -> String {
    status(&["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
}

fn limits() -> String {
    let mut out = String::new();
    for line in read("/proc/self/limits").lines() {
        if line.starts_with("Max open files")
            || line.starts_with("Max processes")
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let n = fields.len();
            if n >= 4 {
                let name = fields[..n - 3].join(" ");
                out.push_str(&format!(
                    "{name}: soft {} hard {}\n",
                    fields[n - 3],
                    fields[n - 2]
                ));
            }
        }
    }
    out.push_str(&status(&["NoNewPrivs", "Seccomp"]));
    out
}

/// The open file descriptors, but the one listing them: a container
/// should hold stdio and nothing its runtime's caller left open.
fn fds() -> String {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return "fds: <cannot list /proc/self/fd>\n".to_owned();
    };
    let mut fds: Vec<(u32, String)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            // The directory being listed is itself an open fd.
            let listing =
                target.starts_with("/proc/") && target.ends_with("/fd");
            (!listing).then_some((fd, target))
        })
        .collect();
    fds.sort();
    let list: Vec<String> = fds.iter().map(|(fd, _)| fd.to_string()).collect();
    format!("fds: {}\n", list.join(" "))
}

fn mounts() -> String {
    let mut out = String::from("mounts:\n");
    for line in read("/proc/self/mountinfo").lines() {
        // mountinfo(5): id parent major:minor root mountpoint options
        // [optional fields] - fstype source superoptions
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mountpoint), Some(options), Some(fstype)) =
            (fields.get(4), fields.get(5), fields.get(dash + 1))
        else {
            continue;
        };
        // relatime is the kernel's default and says nothing about isolation.
        let options: Vec<&str> =
            options.split(',').filter(|o| *o != "relatime").collect();
        out.push_str(&format!(
            "  {mountpoint} {fstype} {}\n",
            options.join(",")
        ));
    }
    out
}

/// One interface as `getifaddrs(3)` lists it.
struct Interface {
    name: String,
    up: bool,
    addresses: Vec<String>,
}

/// Interfaces in the order the kernel lists them (by index), with their
/// IPv4 addresses, and the IPv4 routes from `/proc/net/route`.
fn network() -> String {
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `list` with a linked list we only read and
    // then give back to freeifaddrs(3).
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return format!(
            "network: <getifaddrs: {}>\n",
            io::Error::last_os_error()
        );
    }
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*entry };
        entry = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let index = match interfaces.iter().position(|i| i.name == name) {
            Some(index) => index,
            None => {
                interfaces.push(Interface {
                    name,
                    up: ifa.ifa_flags & libc::IFF_UP as u32 != 0,
                    addresses: Vec::new(),
                });
                interfaces.len() - 1
            }
        };
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: both point to sockaddrs of the family sa_family names.
        unsafe {
            if i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let address = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let mask = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                let address = std::net::Ipv4Addr::from(u32::from_be(
                    address.sin_addr.s_addr,
                ));
                let prefix = u32::from_be(mask.sin_addr.s_addr).count_ones();
                interfaces[index]
                    .addresses
                    .push(format!("{address}/{prefix}"));
            }
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    let mut out = String::from("network:\n");
    for interface in &interfaces {
        let state = if interface.up { "up" } else { "down" };
        out.push_str(&format!("  {} {state}", interface.name));
        for address in &interface.addresses {
            out.push_str(&format!(" {address}"));
        }
        out.push('\n');
    }
    for line in read("/proc/net/route").lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| {
            fields
                .get(i)
                .and_then(|f| u32::from_str_radix(f, 16).ok())
                .map(|v| std::net::Ipv4Addr::from(u32::from_be(v)))
        };
        let (Some(dev), Some(dest), Some(gateway), Some(mask)) =
            (fields.first(), hex(1), hex(2), hex(7))
        else {
            continue;
        };
        let prefix = u32::from(mask).count_ones();
        let target = if prefix == 0 {
            "default".to_owned()
        } else {
            format!("{dest}/{prefix}")
        };
        if gateway.is_unspecified() {
            out.push_str(&format!("  route {target} dev {dev}\n"));
        } else {
            out.push_str(&format!(
                "  route {target} via {gateway} dev {dev}\n"
            ));
        }
    }
    out
}

/// Allocate `mib` MiB one at a time, writing every page so that it is
/// really used (an untouched allocation costs nothing).
fn alloc(mib: usize) -> String {
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for _ in 0..mib {
        let mut block = vec![0u8; 1 << 20];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        blocks.push(block);
    }
    let total: usize = blocks.iter().map(|b| b.len()).sum();
    format!("allocated {} MiB\n", total >> 20)
}

/// The keys listed in `/proc/sysvipc/{shm,msg}`: the calling process's
/// IPC namespace.
fn ipc() -> String {
    let keys = |path: &str| {
        let mut keys: Vec<String> = read(path)
            .lines()
            .skip(1)
            .filter_map(|line| {
                line.split_whitespace().next()?.parse::<i32>().ok()
            })
            .map(|key| format!("{key:#x}"))
            .collect();
        keys.sort();
        if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join(" ")
        }
    };
    format!(
        "ipc shm keys: {}\nipc msg keys: {}\n",
        keys("/proc/sysvipc/shm"),
        keys("/proc/sysvipc/msg")
    )
}

/// Create (or remove) a shared memory segment and a message queue with
/// `key` in the calling process's IPC namespace.
fn ipc_action(make: bool, key: i32) -> io::Result<String> {
    let flags = if make {
        libc::IPC_CREAT | libc::IPC_EXCL | 0o600
    } else {
        0
    };
    // SAFETY: shmget(2) and msgget(2) take plain integers.
    let (shm, msg) =
        unsafe { (libc::shmget(key, 4096, flags), libc::msgget(key, flags)) };
    if shm < 0 || msg < 0 {
        return Err(io::Error::last_os_error());
    }
    if make {
        return Ok(format!("made shm and msg {key:#x}\n"));
    }
    // SAFETY: IPC_RMID takes no buffer; the ids come from the calls above.
    let removed = unsafe {
        libc::shmctl(shm, libc::IPC_RMID, std::ptr::null_mut()) == 0
            && libc::msgctl(msg, libc::IPC_RMID, std::ptr::null_mut()) == 0
    };
    if !removed {
        return Err(io::Error::last_os_error());
    }
    Ok(format!("removed shm and msg {key:#x}\n"))
}

fn cgroup() -> String {
    let mut out = String::from("cgroup:\n");
    for line in read("/proc/self/cgroup").lines() {
        out.push_str(&format!("  {line}\n"));
    }
    let limits = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory.swap.max",
        "/sys/fs/cgroup/cpu.max",
        "/sys/fs/cgroup/cpu.weight",
        "/sys/fs/cgroup/pids.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
        "/sys/fs/cgroup/cpu/cpu.shares",
        "/sys/fs/cgroup/pids/pids.max",
    ];
    let found: Vec<String> = limits
        .iter()
        .filter_map(|path| {
            let value = fs::read_to_string(path).ok()?;
            Some(format!("  {path}: {}\n", value.trim_end()))
        })
        .collect();
    if found.is_empty() {
        out.push_str(
            "cgroup limits: none visible (no cgroup filesystem mounted)\n",
        );
    } else {
        out.push_str("cgroup limits:\n");
        out.extend(found);
    }
    out
}

/// The classic escape: `chroot` into a subdirectory while the working
/// directory stays outside it, climb `..` far enough, `chroot(".")`.
/// Done in a forked child so the probe itself stays where it was; the
/// child's exit code says whether `/` changed.
fn chroot_escape() -> String {
    let before = match fs::metadata("/") {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) => return format!("chroot escape: <stat /: {e}>\n"),
    };
    let dir = format!("/.probe-escape-{}", std::process::id());
    if let Err(e) = fs::create_dir(&dir) {
        return format!("chroot escape: <mkdir {dir}: {e}>\n");
    }
    // SAFETY: the probe is single-threaded; the child only makes syscalls
    // and calls _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let code = escape_in_child(&dir, before);
        // SAFETY: _exit(2) ends the forked child without running the
        // parent's atexit handlers or flushing its buffers twice.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `status` is a valid place for waitpid(2) to write to.
    let waited =
        child > 0 && unsafe { libc::waitpid(child, &mut status, 0) } == child;
    let _ = fs::remove_dir(&dir);
    match (waited, libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, true, 0) => {
            "chroot escape: stayed inside (.. of / is / itself)\n".to_owned()
        }
        (true, true, 1) => {
            "chroot escape: ESCAPED to another root\n".to_owned()
        }
        (true, true, 2) => "chroot escape: <chroot(2) refused>\n".to_owned(),
        _ => "chroot escape: <the attempt failed>\n".to_owned(),
    }
}

/// In the forked child: 0 if `/` is unchanged after the attempt, 1 if the
/// escape reached another root, 2 if a syscall refused.
fn escape_in_child(dir: &str, before: (u64, u64)) -> i32 {
    let (Ok(dir), Ok(dotdot), Ok(dot)) =
        (CString::new(dir), CString::new(".."), CString::new("."))
    else {
        return 2;
    };
    // SAFETY: the arguments are valid NUL-terminated strings.
    unsafe {
        if libc::chroot(dir.as_ptr()) != 0 {
            return 2;
        }
        // The working directory is still the old "/", outside the new root.
        for _ in 0..64 {
            libc::chdir(dotdot.as_ptr());
        }
        if libc::chroot(dot.as_ptr()) != 0 {
            return 2;
        }
    }
    match fs::metadata("/") {
        Ok(m) if (m.dev(), m.ino()) == before => 0,
        Ok(_) => 1,
        Err(_) => 2,
    }
}
