//! The root filesystem the tests and the demo run containers in: Debian's
//! static busybox, its applets as symlinks, and the static `probe`.
//!
//! Built under `target/rootfs` by [`rootfs`] (the tests) or the
//! `berth-fixture` binary (the demo). The probe is rebuilt with cargo each
//! time (a no-op when it is up to date) and copied in; busybox is copied
//! once.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, target_dir, workspace_root};

/// Where Debian's `busybox-static` installs busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// What can go wrong while building the fixture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// busybox is not installed.
    #[error(
        "{BUSYBOX} not found: install a static busybox with `apt-get install busybox-static`"
    )]
    NoBusybox,
    /// busybox is installed but dynamically linked (Debian's `busybox`
    /// package): it would not run in a rootfs without a libc.
    #[error(
        "{BUSYBOX} is dynamically linked and cannot run inside the rootfs: install `busybox-static`"
    )]
    DynamicBusybox,
    /// A filesystem operation failed.
    #[error("{what} {path:?}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A command (cargo, busybox --list) could not run or failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its status or error.
        detail: String,
    },
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Run `command`, failing with its line and status.
fn run(command: &mut Command) -> Result<Vec<u8>, Error> {
    let line = format!("{command:?}");
    let output = command.output().map_err(|e| Error::Command {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(Error::Command {
            command: line,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ),
        });
    }
    Ok(output.stdout)
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String, Error> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = run(Command::new(rustc).arg("-vV"))?;
    String::from_utf8_lossy(&out)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| Error::Command {
            command: "rustc -vV".into(),
            detail: "no host line".into(),
        })
}

/// Build the static probe and return its path.
///
/// `--target` is given explicitly so that `crt-static` applies to the probe
/// only, not to build scripts and proc-macros (which cannot be static);
/// its own target directory keeps those flags from invalidating the
/// ordinary build.
pub fn build_probe() -> Result<PathBuf, Error> {
    let triple = host_triple()?;
    let dir = target_dir().join("probe");
    run(cargo()
        .args(["build", "--quiet", "--release", "-p", "berth-probe"])
        .arg("--target")
        .arg(&triple)
        .arg("--target-dir")
        .arg(&dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(workspace_root()))?;
    Ok(dir.join(triple).join("release/probe"))
}

/// Whether the ELF file `bytes` asks for a dynamic loader (`PT_INTERP`).
fn is_dynamic_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF64 header: e_phoff at 32, e_phentsize at 54, e_phnum at 56.
    let (Some(phoff), Some(size), Some(count)) =
        (u64_at(32), u16_at(54), u16_at(56))
    else {
        return true;
    };
    (0..usize::from(count)).any(|i| {
        let at = phoff as usize + i * usize::from(size);
        u32_at(at) == Some(PT_INTERP)
    })
}

/// Copy `from` to `to` (replacing it) with mode `0755`.
fn install(from: &Path, to: &Path) -> Result<(), Error> {
    // Copy to a temporary name and rename: a running container may be
    // executing the old file (ETXTBSY on an in-place write).
    let tmp = to.with_extension("new");
    fs::copy(from, &tmp).map_err(io_error("cannot copy to", &tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
        .map_err(io_error("cannot chmod", &tmp))?;
    fs::rename(&tmp, to).map_err(io_error("cannot rename to", to))
}

/// Build (or bring up to date) the rootfs at `dir`.
pub fn build_rootfs(dir: &Path) -> Result<(), Error> {
    let busybox = fs::read(BUSYBOX).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NoBusybox,
        _ => Error::Io {
            what: "cannot read",
            path: BUSYBOX.into(),
            source: e,
        },
    })?;
    if is_dynamic_elf(&busybox) {
        return Err(Error::DynamicBusybox);
    }
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io_error("cannot create", &path))?;
    }
    let tmp = dir.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))
        .map_err(io_error("cannot chmod", &tmp))?;
    let bin = dir.join("bin");
    let target = bin.join("busybox");
    if !target.exists() {
        install(Path::new(BUSYBOX), &target)?;
    }
    // The list from the original, not the fresh copy: another thread of a
    // test process may fork while the copy is open for writing, and its
    // child would hold that fd until it execs (ETXTBSY for us).
    let applets = run(Command::new(BUSYBOX).arg("--list"))?;
    for applet in String::from_utf8_lossy(&applets).lines() {
        let link = bin.join(applet);
        if applet == "busybox" || link.symlink_metadata().is_ok() {
            continue;
        }
        symlink("busybox", &link).map_err(io_error("cannot create", &link))?;
    }
    install(&build_probe()?, &bin.join("probe"))?;
    for (name, content) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
        ("etc/hostname", "berth\n"),
    ] {
        let path = dir.join(name);
        fs::write(&path, content).map_err(io_error("cannot write", &path))?;
    }
    Ok(())
}

/// The tests' rootfs, `target/rootfs`, built once per test process.
pub fn rootfs() -> &'static Path {
    static ROOTFS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = target_dir().join("rootfs");
        if crate::prebuilt() {
            assert!(
                dir.join("bin/probe").exists(),
                "BERTH_PREBUILT=1, but there is no rootfs at {}",
                dir.display()
            );
            return dir;
        }
        if let Err(error) = build_rootfs(&dir) {
            panic!("cannot build the test rootfs {}: {error}", dir.display());
        }
        dir
    })
}

/// [`rootfs`] as a reader would type it: relative to the workspace root.
pub fn rootfs_arg() -> String {
    let path = rootfs();
    match path.strip_prefix(workspace_root()) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_elf_are_told_apart() {
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary itself is dynamically linked.
        assert!(is_dynamic_elf(&exe));
        // A header that claims no program headers has no interpreter.
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        assert!(!is_dynamic_elf(&header));
    }
}
