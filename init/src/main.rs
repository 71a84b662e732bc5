//! `berth-init [--] COMMAND [ARG...]`: PID 1 of a container run with
//! `--init`. It forks `COMMAND`, forwards the signals it gets to it,
//! reaps every orphan, and exits with `COMMAND`'s exit code: step 2's
//! init ([`step02_pid::pid::init_program`]), as a program of its own.
//!
//! Built static (`scripts/build-init`), so that it runs in any root: the
//! daemon bind-mounts it read-only at `/sbin/docker-init`, where Docker
//! puts its own.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("berth-init: usage: berth-init [--] COMMAND [ARG...]");
        return ExitCode::from(2);
    }
    match step02_pid::pid::init_program(&args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            // In the forked command, an exec that failed: 127 or 126, as
            // a shell says it.
            let code = error
                .downcast_ref::<step02_pid::child::ExecError>()
                .map_or(1, |e| e.exit_code());
            eprintln!(
                "berth-init: {}",
                step02_pid::child::error_chain(&*error)
            );
            ExitCode::from(code)
        }
    }
}
