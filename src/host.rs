//! Facts about the host that a container must not change, read before and
//! after it runs, and the namespace inodes `probe ns` compares with.

use std::fs;
use std::os::unix::fs::MetadataExt;

/// The namespaces `probe ns` knows.
pub const NAMESPACES: [&str; 8] =
    ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

/// `uts=4026531838,pid=…`: the inode of each of our namespaces, for the
/// probe's `PROBE_HOST_NS`.
pub fn namespace_inodes() -> String {
    NAMESPACES
        .iter()
        .filter_map(|ns| {
            let inode = fs::metadata(format!("/proc/self/ns/{ns}")).ok()?.ino();
            Some(format!("{ns}={inode}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The host's hostname.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("cannot read /proc/sys/kernel/hostname")
        .trim_end()
        .to_owned()
}

/// The host's mounts, one `mountpoint fstype source` line each, sorted:
/// what must be the same before and after a container ran.
pub fn mounts() -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .expect("cannot read mountinfo");
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(format!(
                "{} {} {}",
                fields.get(4)?,
                fields.get(dash + 1)?,
                fields.get(dash + 2)?
            ))
        })
        .collect();
    mounts.sort();
    mounts
}

/// The host's network interfaces, sorted.
pub fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .expect("cannot list /sys/class/net")
        .filter_map(|entry| {
            Some(entry.ok()?.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

/// What a test snapshots of the host before running a container, and
/// asserts is unchanged afterwards.
#[derive(Debug, PartialEq, Eq)]
pub struct State {
    /// The host's hostname.
    pub hostname: String,
    /// The host's mounts.
    pub mounts: Vec<String>,
    /// The host's network interfaces.
    pub interfaces: Vec<String>,
}

impl State {
    /// Read it now.
    pub fn now() -> State {
        State {
            hostname: hostname(),
            mounts: mounts(),
            interfaces: interfaces(),
        }
    }

    /// Panic if the host changed since `self` was read.
    pub fn assert_unchanged(&self) {
        let now = State::now();
        assert_eq!(self.hostname, now.hostname, "the host's hostname changed");
        let added: Vec<_> = now
            .mounts
            .iter()
            .filter(|m| !self.mounts.contains(m))
            .collect();
        let removed: Vec<_> = self
            .mounts
            .iter()
            .filter(|m| !now.mounts.contains(m))
            .collect();
        assert!(
            added.is_empty() && removed.is_empty(),
            "the host's mounts changed: added {added:?}, removed {removed:?}"
        );
        assert_eq!(
            self.interfaces, now.interfaces,
            "the host's interfaces changed"
        );
    }
}

/// The pids of the processes whose command line is exactly `args`: how a
/// test finds its container's process from the host.
pub fn processes(args: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (cmdline == wanted).then_some(pid)
        })
        .collect()
}

/// Wait up to `seconds` for `done`, polling every 20 ms; whether it came.
pub fn wait_for(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    done()
}
