//! `step05-user-ipc --rootfs DIR [--hostname NAME] [--net none|bridge ...]
//! [--userns] [--uid-map C:H:SIZE] [--gid-map C:H:SIZE] -- COMMAND [ARG...]`
//!
//! Run COMMAND as root of a user namespace, with an IPC namespace of its own.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::unistd::{getegid, geteuid};
use step05_user_ipc::{child, mount, net, pid, user, uts};

/// Run COMMAND in a user namespace, rootless if you like (berth step 5).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    uts: uts::Options,
    #[command(flatten)]
    mount: mount::Options,
    #[command(flatten)]
    net: net::Options,
    #[command(flatten)]
    user: user::Options,
    /// The command to run, and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

// ANCHOR: run
fn run(cli: &Cli) -> anyhow::Result<u8> {
    let rootfs = mount::check_rootfs(&cli.mount.rootfs)?;
    let plan = mount::plan();
    let network = net::plan(&cli.net, std::process::id())?;
    let ids = user::plan(&cli.user, geteuid(), getegid())?;
    let flags = uts::CLONE_FLAGS
        | pid::CLONE_FLAGS
        | mount::CLONE_FLAGS
        | net::CLONE_FLAGS
        | user::clone_flags(ids.as_ref());
    let container = child::spawn(flags, |channel| {
        // In the child: PID 1 of the new PID namespace.
        if let Some(ids) = &ids {
            user::become_root(ids, channel)?;
        }
        if let Some(name) = &cli.uts.hostname {
            uts::set_hostname(name)?;
        }
        net::configure(&network)?;
        mount::enter(&rootfs, &plan)?;
        pid::init(&cli.command, channel)
    })
    .context("cannot start the container")?;
    // In the parent, while the child waits at sync 1.
    if let Some(ids) = &ids {
        user::write_maps(ids, container.pid())
            .context("cannot map the container's ids")?;
    }
    let _veth = net::attach(&network, container.pid())
        .context("cannot set up the network")?;
    Ok(container.wait()?)
}
// ANCHOR_END: run

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{}: {error:#}", env!("CARGO_BIN_NAME"));
            ExitCode::from(child::exit_code_of(error.as_ref()))
        }
    }
}
