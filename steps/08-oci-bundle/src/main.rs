//! `step08-oci run --bundle DIR ID`
//!
//! Run the container an OCI bundle describes, in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nix::unistd::{getegid, geteuid};
use step08_oci::oci::{self, hooks};
use step08_oci::{cgroup, child, mount, net};

/// Run an OCI bundle (berth step 8).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
enum Command {
    /// Create and start the container, wait for it, delete it
    Run {
        /// The bundle directory (config.json and the rootfs)
        #[arg(long, short, value_name = "DIR", default_value = ".")]
        bundle: PathBuf,
        /// The container id
        id: String,
    },
}

// ANCHOR: run
fn run(bundle_dir: &std::path::Path, id: &str) -> anyhow::Result<u8> {
    // A signal during set-up waits, pending, until it can be handled with
    // everything undone (see child::interrupted).
    child::supervised_signals().thread_block()?;
    let bundle = oci::load(bundle_dir, id)?;
    let spec = &bundle.spec;
    let process = spec.process().as_ref().ok_or(oci::process::Error::NoArgs)?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let prepared = oci::process::prepare(process, seccomp)?;
    let namespaces = oci::namespaces(spec)?;
    let ids = oci::id_plan(spec, &namespaces, geteuid(), getegid())?;
    let cgroup_plan = oci::cgroup_plan(spec, id)?;
    // Without root, a cgroup only where limits are asked (see step 6).
    let asked = cgroup_plan.resources.any() || cgroup_plan.spec_device_rules;
    let cgroup = if geteuid().is_root() || asked {
        Some(oci::create_cgroup(&cgroup_plan)?)
    } else {
        None
    };
    let view = oci::mounts::CgroupView {
        layout: &cgroup_plan.layout,
        bind: (!namespaces.new_cgroup && cgroup.is_some())
            .then(|| cgroup_plan.path.as_path()),
    };
    let plan = oci::mounts::plan(spec, &bundle.dir, &view)?;
    let loopback = net::Plan {
        host: vec![],
        container: vec![net::ContainerOp::LinkUp {
            link: "lo".parse()?,
        }],
    };
    let all_hooks = spec.hooks().clone().unwrap_or_default();
    let hook_list = |list: &Option<Vec<oci_spec::runtime::Hook>>| {
        list.clone().unwrap_or_default()
    };
    let state = |status: &str, pid: i32| {
        hooks::state(spec.version(), id, status, pid, &bundle.dir)
    };
    // The config is valid: what it asks that cannot be granted.
    for warning in &prepared.warnings {
        eprintln!("{}: warning: {warning}", env!("CARGO_BIN_NAME"));
    }
    // Joining a PID namespace is the parent's doing: it decides where its
    // *next* child is born, and the child cannot change its own.
    let joined_pid = oci::PidNamespace::enter(namespaces.join_pid.as_deref())?;
    let mut container = child::spawn(namespaces.clone, |channel| {
        // In the child: PID 1 of the new PID namespace, if there is one.
        // Until its execve, its /proc/1/exe is ours: hidden (oci::exe).
        oci::exe::undumpable()?;
        oci::join(&namespaces.join)?;
        if let Some(ids) = &ids {
            step08_oci::user::become_root(ids, channel)?;
        }
        if namespaces.new_cgroup {
            cgroup::enter_namespace()?;
        }
        oci::set_names(spec)?;
        if namespaces.new_net {
            net::configure(&loopback)?;
        }
        // Our pid as the host sees it: /proc is still the host's here.
        let pid = oci::host_pid();
        // Every mount but the pivot, then the createContainer hooks: in the
        // container's namespaces, their paths still resolved in the host's.
        let mounts =
            plan.strip_suffix(&[mount::Op::PivotRoot]).unwrap_or(&plan);
        mount::enter(&bundle.rootfs, mounts)?;
        hooks::run(
            "createContainer",
            &hook_list(all_hooks.create_container()),
            &state("creating", pid),
        )?;
        mount::pivot(&bundle.rootfs)?;
        oci::mounts::after_pivot(spec)?;
        let setgroups = !ids.as_ref().is_some_and(|ids| ids.deny_setgroups);
        // startContainer runs last, inside process::start: with the
        // process's own user, capabilities, no_new_privs and seccomp.
        let start_hooks = hook_list(all_hooks.start_container());
        let start_state = state("created", pid);
        let last = || hooks::run("startContainer", &start_hooks, &start_state);
        match oci::process::start(&prepared, setgroups, channel, last)? {}
    })
    .context("cannot start the container")?;
    drop(joined_pid);
    // In the parent, while the child waits at sync 1.
    let pid = container.pid().as_raw();
    if let Some(ids) = &ids {
        step08_oci::user::write_maps(ids, container.pid())
            .context("cannot map the container's ids")?;
    }
    if let Some(cgroup) = &cgroup {
        cgroup.add(container.pid())?;
    }
    // runtime.md's order: the deprecated prestart hooks, then createRuntime.
    for (stage, list) in [
        ("prestart", all_hooks.prestart()),
        ("createRuntime", all_hooks.create_runtime()),
    ] {
        hooks::run(stage, &hook_list(list), &state("creating", pid))?;
    }
    container.start()?;
    let warn = |failures: Vec<hooks::Error>| {
        for failure in failures {
            eprintln!("{}: warning: {failure}", env!("CARGO_BIN_NAME"));
        }
    };
    let poststart = hook_list(all_hooks.poststart());
    warn(hooks::run_all(
        "poststart",
        &poststart,
        &state("running", pid),
    ));
    let code = container.wait()?;
    if let Some(why) =
        seccomp.and_then(|profile| oci::seccomp::explain_exit(profile, code))
    {
        eprintln!("{}: {why}", env!("CARGO_BIN_NAME"));
    }
    if let Some(cgroup) = cgroup {
        cgroup.destroy()?;
    }
    let poststop = hook_list(all_hooks.poststop());
    warn(hooks::run_all("poststop", &poststop, &state("stopped", 0)));
    Ok(code)
}
// ANCHOR_END: run

fn main() -> ExitCode {
    // Before anything else: run from a sealed copy of ourselves, so that
    // no container can reach this binary through /proc/*/exe.
    if let Err(error) = oci::exe::reexec_sealed() {
        eprintln!("{}: {}", env!("CARGO_BIN_NAME"), child::error_chain(&error));
        return ExitCode::from(child::EXIT_SETUP_FAILED);
    }
    let cli = Cli::parse();
    let Command::Run { bundle, id } = &cli.command;
    match run(bundle, id) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{}: {error:#}", env!("CARGO_BIN_NAME"));
            ExitCode::from(child::exit_code_of(error.as_ref()))
        }
    }
}
