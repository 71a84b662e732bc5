//! `config.json`'s hooks: programs the runtime runs at points of the
//! container's life, with the container's state as JSON on their stdin
//! (runtime-spec `config.md`, "POSIX-platform Hooks").
//!
//! | hook              | where it runs here                                  | status     |
//! |-------------------|-----------------------------------------------------|------------|
//! | `createRuntime`, `prestart` | parent, namespaces made, before sync 1    | `creating` |
//! | `createContainer` | child, mounts made, before the pivot                | `creating` |
//! | `startContainer`  | child, restricted as the process, before `execve`   | `created`  |
//! | `poststart`       | parent, once the process runs (after sync 2)        | `running`  |
//! | `poststop`        | parent, after the container and its cgroup are gone | `stopped`  |
//!
//! The state's `pid` is the container process as the host sees it.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// What can go wrong with a hook.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hook could not be started.
    #[error("{stage} hook {path:?} cannot be started")]
    Start {
        /// The stage.
        stage: &'static str,
        /// The hook's program.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The hook failed.
    #[error("{stage} hook {path:?} failed: {status}")]
    Failed {
        /// The stage.
        stage: &'static str,
        /// The hook's program.
        path: String,
        /// Its exit status.
        status: String,
    },
    /// A signal came for the runtime while the hook ran: the hook is
    /// killed and set-up abandoned (the source says which signal).
    #[error("{stage} hook {path:?} was killed")]
    Interrupted {
        /// The stage.
        stage: &'static str,
        /// The hook's program.
        path: String,
        /// [`crate::child::Error::Interrupted`], with the signal.
        #[source]
        source: crate::child::Error,
    },
    /// The hook ran past its timeout.
    #[error("{stage} hook {path:?} did not finish within {seconds}s")]
    Timeout {
        /// The stage.
        stage: &'static str,
        /// The hook's program.
        path: String,
        /// The timeout.
        seconds: i64,
    },
}

// ANCHOR: state
/// The state a hook reads on stdin (runtime-spec `runtime.md`, "State").
pub fn state(
    version: &str,
    id: &str,
    status: &str,
    pid: i32,
    bundle: &Path,
) -> String {
    serde_json::json!({
        "ociVersion": version,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
    })
    .to_string()
}
// ANCHOR_END: state

// ANCHOR: run
/// Run the `stage` hooks in order, each with `state` on stdin; the first
/// failure stops them (and the container: runtime.md, for the hooks before
/// the process starts).
pub fn run(
    stage: &'static str,
    hooks: &[Hook],
    state: &str,
) -> Result<(), Error> {
    for hook in hooks {
        run_one(stage, hook, state)?;
    }
    Ok(())
}

/// Run every `stage` hook, whatever the others do, and return the
/// failures: a failing `poststart` or `poststop` hook is only a warning
/// (runtime.md); the container goes on, or has already ended.
pub fn run_all(stage: &'static str, hooks: &[Hook], state: &str) -> Vec<Error> {
    hooks
        .iter()
        .filter_map(|hook| run_one(stage, hook, state).err())
        .collect()
}

/// One hook: started, fed `state`, waited for (until its timeout).
fn run_one(stage: &'static str, hook: &Hook, state: &str) -> Result<(), Error> {
    {
        let path = hook.path().display().to_string();
        let args = hook.args().clone().unwrap_or_default();
        crate::trace::event(8, || format!("hook {stage}: {path} {args:?}"));
        let mut command = Command::new(hook.path());
        if let Some((arg0, rest)) = args.split_first() {
            command.arg0(arg0).args(rest);
        }
        command.env_clear().stdin(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls run:
        // sigaction(2), sigprocmask(2) and prctl(2). A hook starts as a
        // fresh process would: default dispositions, nothing blocked (we
        // block the forwarded signals, and Rust ignores SIGPIPE). And it
        // dies with the runtime that waits for it: a runtime killed during
        // a hook must not leave the hook running on its own.
        unsafe {
            command.pre_exec(|| {
                crate::child::reset_signal_dispositions()?;
                nix::sys::signal::SigSet::empty().thread_set_mask()?;
                nix::sys::prctl::set_pdeathsig(
                    nix::sys::signal::Signal::SIGKILL,
                )?;
                Ok(())
            });
        }
        for pair in hook.env().clone().unwrap_or_default() {
            if let Some((key, value)) = pair.split_once('=') {
                command.env(key, value);
            }
        }
        let mut child = command.spawn().map_err(|source| Error::Start {
            stage,
            path: path.clone(),
            source,
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its state is not an error.
            let _ = stdin.write_all(state.as_bytes());
        }
        let deadline = hook.timeout().map(|s| {
            (s, Instant::now() + Duration::from_secs(s.max(1) as u64))
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(_) => break child.wait().unwrap_or_default(),
            }
            if let Some(signal) = crate::child::interrupted() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Interrupted {
                    stage,
                    path,
                    source: crate::child::Error::Interrupted { signal },
                });
            }
            if let Some((seconds, deadline)) = deadline
                && Instant::now() > deadline
            {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    stage,
                    path,
                    seconds,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !status.success() {
            return Err(Error::Failed {
                stage,
                path,
                status: status.to_string(),
            });
        }
    }
    Ok(())
}
// ANCHOR_END: run
