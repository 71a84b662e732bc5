//! `step07-overlay (--rootfs DIR | --image LAYER...) [--store DIR]
//! [--commit FILE] [...step 6 options] -- COMMAND [ARG...]`
//!
//! Run COMMAND on a stack of image layers, with a writable layer of its own.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::unistd::{getegid, geteuid};
use step07_overlay::{cgroup, child, mount, net, overlay, pid, user, uts};

/// Run COMMAND on image layers through overlayfs (berth step 7).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    uts: uts::Options,
    #[command(flatten)]
    root: overlay::Options,
    #[command(flatten)]
    net: net::Options,
    #[command(flatten)]
    user: user::Options,
    #[command(flatten)]
    cgroup: cgroup::Options,
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
    let layers = &cli.root.layers;
    let overlay = if layers.is_empty() {
        None
    } else {
        let store = overlay::Store::open(&overlay::store_dir(&cli.root)?)?;
        let layers = (layers.iter())
            .map(|layer| store.layer(layer, None))
            .collect::<Result<Vec<_>, _>>()?;
        Some(store.container(&format!("c{}", std::process::id()), &layers)?)
    };
    let rootfs = match (&overlay, &cli.root.rootfs) {
        (Some(overlay), _) => overlay.merged.clone(),
        (None, Some(dir)) => mount::check_rootfs(dir)?,
        (None, None) => return Err(overlay::Error::NoRoot.into()),
    };
    let mut plan = mount::plan();
    let network = net::plan(&cli.net, std::process::id())?;
    let ids = user::plan(&cli.user, geteuid(), getegid())?;
    let cgroup = cgroup::for_step(&cli.cgroup, &mut plan)?;
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
        if cgroup.is_some() {
            cgroup::enter_namespace()?;
        }
        if let Some(name) = &cli.uts.hostname {
            uts::set_hostname(name)?;
        }
        net::configure(&network)?;
        if let Some(overlay) = &overlay {
            mount::make_private()?;
            overlay.mount()?;
        }
        mount::enter(&rootfs, &plan)?;
        pid::init(&cli.command, channel)
    })
    .context("cannot start the container")?;
    // In the parent, while the child waits at sync 1.
    if let Some(ids) = &ids {
        user::write_maps(ids, container.pid())
            .context("cannot map the container's ids")?;
    }
    if let Some(cgroup) = &cgroup {
        cgroup.add(container.pid())?;
    }
    let _veth = net::attach(&network, container.pid())
        .context("cannot set up the network")?;
    let code = container.wait()?;
    if let Some(cgroup) = cgroup {
        let memory = cli.cgroup.memory.map(|m| m.0);
        for line in cgroup.stats().report(memory, cli.cgroup.stats) {
            eprintln!("{}: {line}", env!("CARGO_BIN_NAME"));
        }
        cgroup.destroy()?;
    }
    if let (Some(overlay), Some(file)) = (&overlay, &cli.root.commit) {
        let summary = overlay.commit(file)?;
        eprintln!(
            "{}: wrote {} entries ({} whiteouts) to {}",
            env!("CARGO_BIN_NAME"),
            summary.entries,
            summary.whiteouts,
            file.display()
        );
    }
    Ok(code)
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
