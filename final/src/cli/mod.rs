//! `berth`'s client commands: a docker-compatible command line, a client
//! of the daemon's API through bollard (so that it drives a real dockerd
//! as well). Output in docker's formats ([`format`]); errors as one line
//! on stderr, exit 125 for the engine's own failures and the
//! container's code for `run`, as docker.
//!
//! This increment: `version`, `images`, `ps`, `run` (`-d`, `-i`, `--rm`,
//! and the container flags below), `create`, `start [-a]`, `stop`,
//! `kill`, `wait`, `rm`, `logs`, `inspect`, `exec` (`-d`, `-i`, `-t`), `load`,
//! `save`, `tag`, `rmi`; `-t` puts this terminal in raw mode and gives
//! the container's its size; `top`, `diff`, `commit`, `events`, `stats`
//! ([`monitor`]), `cp` ([`copy`]).

pub mod copy;
pub mod format;
pub mod monitor;
pub mod registry;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters as q;
use futures_util::StreamExt;

/// The engine's own failure: docker's 125.
pub const EXIT_ENGINE: u8 = 125;

/// A command's failure: what to print, and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// One line.
    pub message: String,
    /// The exit code.
    pub code: u8,
}

impl Failure {
    fn engine(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: EXIT_ENGINE,
        }
    }
}

impl From<bollard::errors::Error> for Failure {
    fn from(error: bollard::errors::Error) -> Failure {
        match error {
            bollard::errors::Error::DockerResponseServerError {
                message,
                ..
            } => Failure::engine(format!(
                "Error response from daemon: {message}"
            )),
            other => Failure::engine(other.to_string()),
        }
    }
}

/// The flags of `run` and `create` that shape the container.
#[derive(Debug, Clone, clap::Args)]
pub struct ContainerFlags {
    /// Its name.
    #[arg(long)]
    name: Option<String>,
    /// Environment: KEY=VALUE.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Files of KEY=VALUE lines.
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// The working directory.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// USER[:GROUP], by name or number.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Labels: KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    labels: Vec<String>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// The hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// A terminal: a pty in the container, this terminal in raw mode.
    #[arg(short = 't', long)]
    tty: bool,
    /// A read-only root.
    #[arg(long)]
    read_only: bool,
    /// Memory limit (bytes, or with k, m, g).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Memory plus swap (-1: unlimited).
    #[arg(long)]
    memory_swap: Option<String>,
    /// CPUs (fractional).
    #[arg(long)]
    cpus: Option<f64>,
    /// Relative CPU weight.
    #[arg(short = 'c', long)]
    cpu_shares: Option<i64>,
    /// Most processes.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// NAME=SOFT[:HARD].
    #[arg(long)]
    ulimit: Vec<String>,
    /// Capabilities to add.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Capabilities to drop.
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Every capability, no masked paths, every device.
    #[arg(long)]
    privileged: bool,
    /// no-new-privileges, seccomp=FILE (a profile in Docker's format),
    /// seccomp=unconfined.
    #[arg(long)]
    security_opt: Vec<String>,
    /// Run an init as PID 1 that forwards signals and reaps orphans.
    #[arg(long)]
    init: bool,
    /// PATH[:OPTIONS] tmpfs mounts.
    #[arg(long)]
    tmpfs: Vec<String>,
    /// none or host.
    #[arg(long)]
    network: Option<String>,
    /// The OCI runtime.
    #[arg(long)]
    runtime: Option<String>,
    /// The stop signal.
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds to wait for a stop.
    #[arg(long)]
    stop_timeout: Option<i64>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// The image.
    image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `512m`, `1g`, `1024`: bytes.
fn bytes_of(text: &str) -> Result<i64, Failure> {
    let lower = text.to_ascii_lowercase();
    let (number, factor) = match lower.trim_end_matches('b').chars().last() {
        Some('k') => (&lower[..lower.find('k').unwrap_or(0)], 1i64 << 10),
        Some('m') => (&lower[..lower.find('m').unwrap_or(0)], 1 << 20),
        Some('g') => (&lower[..lower.find('g').unwrap_or(0)], 1 << 30),
        _ => (lower.trim_end_matches('b'), 1),
    };
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| Failure::engine(format!("invalid size: {text:?}")))
}

impl ContainerFlags {
    /// The create request.
    fn body(&self) -> Result<ContainerCreateBody, Failure> {
        let mut env = Vec::new();
        for file in &self.env_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Failure::engine(format!("open {}: {e}", file.display()))
            })?;
            env.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        env.extend(self.env.iter().cloned());
        let labels: HashMap<String, String> = self
            .labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (l.clone(), String::new()),
            })
            .collect();
        let mut ulimits = Vec::new();
        for limit in &self.ulimit {
            let (name, values) = limit.split_once('=').ok_or_else(|| {
                Failure::engine(format!("invalid ulimit argument: {limit}"))
            })?;
            let (soft, hard) =
                values.split_once(':').unwrap_or((values, values));
            let number = |v: &str| {
                v.parse::<i64>().map_err(|_| {
                    Failure::engine(format!("invalid ulimit argument: {limit}"))
                })
            };
            ulimits.push(ResourcesUlimits {
                name: Some(name.to_owned()),
                soft: Some(number(soft)?),
                hard: Some(number(hard)?),
            });
        }
        let tmpfs: HashMap<String, String> = self
            .tmpfs
            .iter()
            .map(|t| match t.split_once(':') {
                Some((p, o)) => (p.to_owned(), o.to_owned()),
                None => (t.clone(), String::new()),
            })
            .collect();
        let host = HostConfig {
            auto_remove: Some(self.rm),
            readonly_rootfs: Some(self.read_only),
            memory: self.memory.as_deref().map(bytes_of).transpose()?,
            memory_swap: match self.memory_swap.as_deref() {
                Some("-1") => Some(-1),
                other => other.map(bytes_of).transpose()?,
            },
            nano_cpus: self.cpus.map(|c| (c * 1e9) as i64),
            cpu_shares: self.cpu_shares,
            pids_limit: self.pids_limit,
            ulimits: (!ulimits.is_empty()).then_some(ulimits),
            cap_add: (!self.cap_add.is_empty()).then(|| self.cap_add.clone()),
            cap_drop: (!self.cap_drop.is_empty())
                .then(|| self.cap_drop.clone()),
            privileged: Some(self.privileged),
            security_opt: (!self.security_opt.is_empty())
                .then(|| security_opts(&self.security_opt))
                .transpose()?,
            init: self.init.then_some(true),
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            network_mode: self.network.clone(),
            runtime: self.runtime.clone(),
            // The pty starts at this terminal's size (docker's CLI
            // sends it too): the first program in it sees the right one.
            console_size: self.tty.then(console_size).flatten(),
            ..HostConfig::default()
        };
        Ok(ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: (!self.command.is_empty()).then(|| self.command.clone()),
            entrypoint: self.entrypoint.clone().map(|e| vec![e]),
            env: Some(env),
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
            labels: Some(labels),
            hostname: self.hostname.clone(),
            open_stdin: Some(self.interactive),
            tty: Some(self.tty),
            stdin_once: Some(self.interactive),
            attach_stdin: Some(self.interactive),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            stop_signal: self.stop_signal.clone(),
            stop_timeout: self.stop_timeout,
            host_config: Some(host),
            ..ContainerCreateBody::default()
        })
    }
}

/// `--security-opt` as the API takes it: `seccomp=FILE` becomes the
/// file's contents (the daemon never reads the client's files), as the
/// docker CLI sends it.
fn security_opts(opts: &[String]) -> Result<Vec<String>, Failure> {
    opts.iter()
        .map(|opt| match opt.split_once(['=', ':']) {
            Some(("seccomp", file))
                if file != "unconfined" && file != "builtin" =>
            {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    Failure::engine(format!(
                        "opening seccomp profile ({file}) failed: {e}"
                    ))
                })?;
                Ok(format!("seccomp={text}"))
            }
            _ => Ok(opt.clone()),
        })
        .collect()
}

/// `berth`'s client commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The client's and the server's versions.
    Version,
    /// The images.
    Images {
        /// IDs only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// The containers.
    Ps {
        /// Stopped ones too.
        #[arg(short, long)]
        all: bool,
        /// IDs only.
        #[arg(short, long)]
        quiet: bool,
        /// KEY=VALUE filters (name, status, label, id).
        #[arg(short, long)]
        filter: Vec<String>,
    },
    /// Create and start a container.
    Run {
        /// Start it and print its id.
        #[arg(short, long)]
        detach: bool,
        #[command(flatten)]
        flags: ContainerFlags,
    },
    /// Create a container.
    Create {
        #[command(flatten)]
        flags: ContainerFlags,
    },
    /// Start containers.
    Start {
        /// Attach to its output and exit with its code.
        #[arg(short, long)]
        attach: bool,
        /// The containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: their stop signal, then SIGKILL.
    Stop {
        /// Seconds before SIGKILL.
        #[arg(short = 't', long = "time")]
        time: Option<i32>,
        /// The containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send containers a signal.
    Kill {
        /// The signal.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// The containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to stop; print their exit codes.
    Wait {
        /// The containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running ones first.
        #[arg(short, long)]
        force: bool,
        /// The containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// A container's output.
    Logs {
        /// Follow it.
        #[arg(short, long)]
        follow: bool,
        /// With timestamps.
        #[arg(short, long)]
        timestamps: bool,
        /// The last N lines.
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// The container.
        container: String,
    },
    /// Containers' or images' JSON.
    Inspect {
        /// Containers or images.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command in a running container.
    Exec {
        /// Do not wait for it.
        #[arg(short, long)]
        detach: bool,
        /// Keep stdin open.
        #[arg(short, long)]
        interactive: bool,
        /// A terminal: a pty for the command, this terminal in raw mode.
        #[arg(short, long)]
        tty: bool,
        /// Environment: KEY=VALUE.
        #[arg(short, long)]
        env: Vec<String>,
        /// The working directory.
        #[arg(short, long)]
        workdir: Option<String>,
        /// USER[:GROUP].
        #[arg(short, long)]
        user: Option<String>,
        /// The container.
        container: String,
        /// The command.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<String>,
    },
    /// A container's processes.
    Top {
        /// The container.
        container: String,
        /// Options for ps (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// What a container changed in its filesystem: A, C, D.
    Diff {
        /// The container.
        container: String,
    },
    /// A container's changes as a new image.
    Commit {
        /// A message for the image's history.
        #[arg(short, long)]
        message: Option<String>,
        /// The author.
        #[arg(short, long)]
        author: Option<String>,
        /// The container.
        container: String,
        /// REPOSITORY[:TAG].
        name: Option<String>,
    },
    /// Load images from a tar.
    Load {
        /// The tar (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
    /// Save images to a tar.
    Save {
        /// The file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an image another name.
    Tag {
        /// The image.
        source: String,
        /// The new name.
        target: String,
    },
    /// Copy files between a container and this machine
    /// (`CONTAINER:PATH LOCAL` or `LOCAL CONTAINER:PATH`; `-`: a tar on
    /// stdin or stdout).
    Cp {
        /// Follow a symlink source.
        #[arg(short = 'L', long)]
        follow_link: bool,
        /// The source.
        src: String,
        /// The destination.
        dst: String,
    },
    /// The engine's events, as they happen.
    Events {
        /// From this time (a duration before now, RFC 3339, or seconds).
        #[arg(long)]
        since: Option<String>,
        /// Until this time, then stop.
        #[arg(long)]
        until: Option<String>,
        /// KEY=VALUE filters (type, event, container, image, label).
        #[arg(short, long)]
        filter: Vec<String>,
        /// `json` (or `{{json .}}`): each event's JSON.
        #[arg(long)]
        format: Option<String>,
    },
    /// What containers use: CPU, memory, network, block I/O, processes.
    Stats {
        /// Stopped containers too.
        #[arg(short, long)]
        all: bool,
        /// Print once, not every second.
        #[arg(long)]
        no_stream: bool,
        /// The containers (default: the running ones).
        containers: Vec<String>,
    },
    /// Build an image from a Dockerfile and a context directory.
    Build {
        /// Names for the image (REPOSITORY[:TAG]).
        #[arg(short, long = "tag")]
        tag: Vec<String>,
        /// The Dockerfile, in the context (default: Dockerfile).
        #[arg(short, long)]
        file: Option<String>,
        /// KEY=VALUE for an ARG.
        #[arg(long = "build-arg")]
        build_arg: Vec<String>,
        /// Run every step, the cache unused.
        #[arg(long)]
        no_cache: bool,
        /// The context directory.
        path: PathBuf,
    },
    /// Pull an image from a registry.
    Pull {
        /// The platform (os/arch[/variant]; default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        /// Print only the image's name.
        #[arg(short, long)]
        quiet: bool,
        /// NAME[:TAG|@DIGEST].
        name: String,
    },
    /// Push an image to a registry.
    Push {
        /// NAME[:TAG].
        name: String,
    },
    /// Log in to a registry (default: Docker Hub); the credentials go to
    /// Docker's config.json.
    Login {
        /// The user.
        #[arg(short, long)]
        username: Option<String>,
        /// The password.
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
        /// The registry (HOST[:PORT]).
        server: Option<String>,
    },
    /// Forget the credentials of a registry.
    Logout {
        /// The registry (HOST[:PORT]).
        server: Option<String>,
    },
    /// Remove images.
    Rmi {
        /// Even if containers use them.
        #[arg(short, long)]
        force: bool,
        /// The images.
        #[arg(required = true)]
        images: Vec<String>,
    },
}

/// The daemon's socket: `-H unix://PATH`, else `$DOCKER_HOST`'s, else
/// the default one.
pub fn socket(host: Option<&str>) -> Result<String, Failure> {
    let from_env = std::env::var("DOCKER_HOST").ok();
    let host = host
        .map(str::to_owned)
        .or(from_env)
        .unwrap_or_else(|| "unix:///run/berth/berth.sock".into());
    host.strip_prefix("unix://")
        .map(str::to_owned)
        .ok_or_else(|| {
            Failure::engine(format!("{host}: only unix:// hosts are supported"))
        })
}

/// A client of the daemon at `socket`.
pub fn connect(socket: &str) -> Result<Docker, Failure> {
    Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)
        .map_err(Failure::from)
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

fn print(text: &str) {
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Write one chunk of a container's output where it belongs.
fn emit(output: LogOutput) {
    match output {
        LogOutput::StdErr { message } => {
            let _ = std::io::stderr().write_all(&message);
        }
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(&message);
            let _ = stdout.flush();
        }
        LogOutput::StdIn { .. } => {}
    }
}

/// Run `command`; the exit code.
pub async fn run(
    docker: &Docker,
    socket: &str,
    command: Command,
) -> Result<u8, Failure> {
    match command {
        Command::Pull {
            platform,
            quiet,
            name,
        } => registry::pull(socket, &name, platform, quiet).await,
        Command::Push { name } => registry::push(socket, &name).await,
        Command::Build {
            tag,
            file,
            build_arg,
            no_cache,
            path,
        } => {
            registry::build(
                socket,
                &path,
                &tag,
                file.as_deref(),
                &build_arg,
                no_cache,
            )
            .await
        }
        Command::Login {
            username,
            password,
            password_stdin,
            server,
        } => {
            registry::login(
                socket,
                server.as_deref(),
                username,
                password,
                password_stdin,
            )
            .await
        }
        Command::Logout { server } => registry::logout(server.as_deref()),
        Command::Version => {
            let server = docker.version().await?;
            print(&format!(
                "Client:\n Version:           {}\n API version:       {}\n\nServer:\n Engine:\n  Version:          {}\n  API version:      {} (minimum version {})\n",
                env!("CARGO_PKG_VERSION"),
                bollard::API_DEFAULT_VERSION,
                server.version.unwrap_or_default(),
                server.api_version.unwrap_or_default(),
                server.min_api_version.unwrap_or_default(),
            ));
            Ok(0)
        }
        Command::Images { quiet } => {
            let images =
                docker.list_images(None::<q::ListImagesOptions>).await?;
            if quiet {
                let ids: Vec<String> =
                    images.iter().map(|i| short(&i.id) + "\n").collect();
                print(&ids.concat());
                return Ok(0);
            }
            let mut rows = Vec::new();
            for image in &images {
                let tags = if image.repo_tags.is_empty() {
                    vec!["<none>:<none>".to_owned()]
                } else {
                    image.repo_tags.clone()
                };
                for tag in tags {
                    let (repo, tag) = tag
                        .rsplit_once(':')
                        .map_or((tag.clone(), "<none>".into()), |(r, t)| {
                            (r.to_owned(), t.to_owned())
                        });
                    rows.push(vec![
                        repo,
                        tag,
                        short(&image.id),
                        format::ago(image.created),
                        format::size(image.size),
                    ]);
                }
            }
            print(&format::table(
                &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
                &rows,
                10,
            ));
            Ok(0)
        }
        Command::Ps { all, quiet, filter } => {
            let mut filters: HashMap<String, Vec<String>> = HashMap::new();
            for f in filter {
                let (k, v) = f.split_once('=').ok_or_else(|| {
                    Failure::engine(format!(
                        "bad format of filter (expected name=value): {f}"
                    ))
                })?;
                filters.entry(k.to_owned()).or_default().push(v.to_owned());
            }
            let options = q::ListContainersOptions {
                all,
                filters: Some(filters),
                ..Default::default()
            };
            let containers = docker.list_containers(Some(options)).await?;
            if quiet {
                let ids: Vec<String> = containers
                    .iter()
                    .map(|c| short(c.id.as_deref().unwrap_or("")) + "\n")
                    .collect();
                print(&ids.concat());
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = containers
                .iter()
                .map(|c| {
                    let names: Vec<String> = c
                        .names
                        .clone()
                        .unwrap_or_default()
                        .iter()
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .collect();
                    vec![
                        short(c.id.as_deref().unwrap_or("")),
                        c.image.clone().unwrap_or_default(),
                        format::command(c.command.as_deref().unwrap_or("")),
                        format::ago(c.created.unwrap_or(0)),
                        c.status.clone().unwrap_or_default(),
                        String::new(),
                        names.join(","),
                    ]
                })
                .collect();
            print(&format::table(
                &[
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "CREATED",
                    "STATUS",
                    "PORTS",
                    "NAMES",
                ],
                &rows,
                10,
            ));
            Ok(0)
        }
        Command::Create { flags } => {
            let id = create(docker, &flags).await?;
            print(&format!("{id}\n"));
            Ok(0)
        }
        Command::Run { detach, flags } => {
            let id = create(docker, &flags).await?;
            if detach {
                docker
                    .start_container(&id, None::<q::StartContainerOptions>)
                    .await?;
                print(&format!("{id}\n"));
                return Ok(0);
            }
            attached_start(docker, &id, flags.interactive, flags.tty, flags.rm)
                .await
        }
        Command::Start { attach, containers } => {
            if attach {
                let [container] = containers.as_slice() else {
                    return Err(Failure::engine(
                        "you cannot start and attach multiple containers at once",
                    ));
                };
                return attached_start(docker, container, false, false, false)
                    .await;
            }
            for container in containers {
                docker
                    .start_container(
                        &container,
                        None::<q::StartContainerOptions>,
                    )
                    .await?;
                print(&format!("{container}\n"));
            }
            Ok(0)
        }
        Command::Stop { time, containers } => {
            for container in containers {
                let options = q::StopContainerOptions {
                    t: time,
                    ..Default::default()
                };
                docker.stop_container(&container, Some(options)).await?;
                print(&format!("{container}\n"));
            }
            Ok(0)
        }
        Command::Kill { signal, containers } => {
            for container in containers {
                let options = q::KillContainerOptions {
                    signal: signal.clone(),
                };
                docker.kill_container(&container, Some(options)).await?;
                print(&format!("{container}\n"));
            }
            Ok(0)
        }
        Command::Wait { containers } => {
            for container in containers {
                let code = wait(docker, &container, "not-running").await?;
                print(&format!("{code}\n"));
            }
            Ok(0)
        }
        Command::Rm { force, containers } => {
            for container in containers {
                let options = q::RemoveContainerOptions {
                    force,
                    ..Default::default()
                };
                docker.remove_container(&container, Some(options)).await?;
                print(&format!("{container}\n"));
            }
            Ok(0)
        }
        Command::Logs {
            follow,
            timestamps,
            tail,
            container,
        } => {
            let options = q::LogsOptions {
                follow,
                timestamps,
                tail,
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            let mut logs = docker.logs(&container, Some(options));
            while let Some(output) = logs.next().await {
                emit(output?);
            }
            Ok(0)
        }
        Command::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                match docker
                    .inspect_container(
                        &name,
                        None::<q::InspectContainerOptions>,
                    )
                    .await
                {
                    Ok(container) => out.push(
                        serde_json::to_value(container).unwrap_or_default(),
                    ),
                    Err(_) => {
                        let image = docker.inspect_image(&name).await.map_err(
                            |_| Failure {
                                message: format!(
                                    "Error: No such object: {name}"
                                ),
                                code: 1,
                            },
                        )?;
                        out.push(
                            serde_json::to_value(image).unwrap_or_default(),
                        );
                    }
                }
            }
            print(
                &(serde_json::to_string_pretty(&out).unwrap_or_default()
                    + "\n"),
            );
            Ok(0)
        }
        Command::Exec {
            detach,
            interactive,
            tty,
            env,
            workdir,
            user,
            container,
            command,
        } => {
            let config = bollard::models::ExecConfig {
                attach_stdin: Some(interactive),
                attach_stdout: Some(!detach),
                attach_stderr: Some(!detach),
                env: Some(env),
                working_dir: workdir,
                user,
                cmd: Some(command),
                tty: Some(tty),
                console_size: tty.then(console_size).flatten(),
                ..Default::default()
            };
            let exec = docker.create_exec(&container, config).await?;
            let options = bollard::exec::StartExecOptions {
                detach,
                tty,
                ..Default::default()
            };
            match docker.start_exec(&exec.id, Some(options)).await? {
                bollard::exec::StartExecResults::Attached { output, input } => {
                    let pty = tty.then_some(Pty::Exec(&exec.id));
                    session(docker, pty, interactive, output, input).await?;
                    let inspected = docker.inspect_exec(&exec.id).await?;
                    Ok(inspected.exit_code.unwrap_or(0).clamp(0, 255) as u8)
                }
                bollard::exec::StartExecResults::Detached => Ok(0),
            }
        }
        Command::Top { container, ps_args } => {
            let options = q::TopOptions {
                ps_args: ps_args.join(" "),
            };
            let top = docker.top_processes(&container, Some(options)).await?;
            let titles = top.titles.unwrap_or_default();
            let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
            print(&format::table(
                &titles,
                &top.processes.unwrap_or_default(),
                20,
            ));
            Ok(0)
        }
        Command::Diff { container } => {
            let changes = docker
                .container_changes(&container)
                .await?
                .unwrap_or_default();
            let lines: Vec<String> = changes
                .iter()
                .map(|c| {
                    let kind = match c.kind.to_string().as_str() {
                        "1" => 'A',
                        "2" => 'D',
                        _ => 'C',
                    };
                    format!("{kind} {}\n", c.path)
                })
                .collect();
            print(&lines.concat());
            Ok(0)
        }
        Command::Commit {
            message,
            author,
            container,
            name,
        } => {
            let (repo, tag) = match name
                .as_deref()
                .map(|n| n.rsplit_once(':').filter(|(_, t)| !t.contains('/')))
            {
                Some(Some((r, t))) => (Some(r.to_owned()), Some(t.to_owned())),
                Some(None) => (name.clone(), None),
                None => (None, None),
            };
            let options = q::CommitContainerOptions {
                container: Some(container),
                repo,
                tag,
                comment: message,
                author,
                pause: true,
                changes: None,
            };
            let id = docker
                .commit_container(
                    options,
                    bollard::models::ContainerConfig::default(),
                )
                .await?;
            print(&format!("{}\n", id.id));
            Ok(0)
        }
        Command::Load { input } => {
            let bytes = match input {
                Some(path) => std::fs::read(&path).map_err(|e| {
                    Failure::engine(format!("open {}: {e}", path.display()))
                })?,
                None => {
                    let mut buffer = Vec::new();
                    std::io::Read::read_to_end(
                        &mut std::io::stdin(),
                        &mut buffer,
                    )
                    .map_err(|e| Failure::engine(format!("read stdin: {e}")))?;
                    buffer
                }
            };
            let options = q::ImportImageOptions::default();
            let mut stream = docker.import_image(
                options,
                bollard::body_full(bytes.into()),
                None,
            );
            while let Some(info) = stream.next().await {
                let info = info?;
                if let Some(line) = info.stream {
                    print(&line);
                }
                if let Some(error) = info.error_detail.and_then(|e| e.message) {
                    return Err(Failure {
                        message: error,
                        code: 1,
                    });
                }
            }
            Ok(0)
        }
        Command::Save { output, images } => {
            let names: Vec<&str> = images.iter().map(String::as_str).collect();
            let mut stream = docker.export_images(&names);
            let mut sink: Box<dyn Write> = match &output {
                Some(path) => {
                    Box::new(std::fs::File::create(path).map_err(|e| {
                        Failure::engine(format!(
                            "create {}: {e}",
                            path.display()
                        ))
                    })?)
                }
                None => Box::new(std::io::stdout()),
            };
            while let Some(chunk) = stream.next().await {
                sink.write_all(&chunk?)
                    .map_err(|e| Failure::engine(format!("write: {e}")))?;
            }
            sink.flush()
                .map_err(|e| Failure::engine(format!("write: {e}")))?;
            Ok(0)
        }
        Command::Tag { source, target } => {
            let (repo, tag) = match target.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => {
                    (r.to_owned(), t.to_owned())
                }
                _ => (target.clone(), "latest".to_owned()),
            };
            let options = q::TagImageOptions {
                repo: Some(repo),
                tag: Some(tag),
            };
            docker.tag_image(&source, Some(options)).await?;
            Ok(0)
        }
        Command::Cp {
            follow_link,
            src,
            dst,
        } => copy::cp(docker, &src, &dst, follow_link).await,
        Command::Events {
            since,
            until,
            filter,
            format,
        } => {
            let json = match format.as_deref() {
                None => false,
                Some("json" | "{{json .}}") => true,
                Some(other) => {
                    return Err(Failure::engine(format!(
                        "unsupported format {other:?}: only json"
                    )));
                }
            };
            monitor::events(docker, since, until, &filter, json).await
        }
        Command::Stats {
            all,
            no_stream,
            containers,
        } => monitor::stats(docker, containers, all, no_stream).await,
        Command::Rmi { force, images } => {
            for image in images {
                let options = q::RemoveImageOptions {
                    force,
                    ..Default::default()
                };
                for item in
                    docker.remove_image(&image, Some(options), None).await?
                {
                    if let Some(untagged) = item.untagged {
                        print(&format!("Untagged: {untagged}\n"));
                    }
                    if let Some(deleted) = item.deleted {
                        print(&format!("Deleted: {deleted}\n"));
                    }
                }
            }
            Ok(0)
        }
    }
}

async fn create(
    docker: &Docker,
    flags: &ContainerFlags,
) -> Result<String, Failure> {
    let options = q::CreateContainerOptions {
        name: flags.name.clone(),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(options), flags.body()?)
        .await?;
    Ok(created.id)
}

/// The exit code `wait` reports for `container` under `condition`.
async fn wait(
    docker: &Docker,
    container: &str,
    condition: &str,
) -> Result<u8, Failure> {
    let options = q::WaitContainerOptions {
        condition: condition.to_owned(),
    };
    let mut stream = docker.wait_container(container, Some(options));
    match stream.next().await {
        Some(Ok(response)) => Ok(response.status_code.clamp(0, 255) as u8),
        Some(Err(bollard::errors::Error::DockerContainerWaitError {
            code,
            ..
        })) => Ok(code.clamp(0, 255) as u8),
        Some(Err(e)) => Err(e.into()),
        None => Err(Failure::engine(
            "the daemon ended the wait without an answer",
        )),
    }
}

/// This terminal in raw mode while it lives (keys go to the container's
/// pty as typed; the container's terminal echoes them), restored when
/// dropped. `None` if stdin is not a terminal.
struct Raw {
    saved: nix::sys::termios::Termios,
}

impl Raw {
    fn enter() -> Option<Raw> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Raw { saved })
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// This terminal's size (rows, columns), from stdout.
fn terminal_size() -> Option<(i32, i32)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize through the pointer, alive here.
    let rc = unsafe {
        libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size)
    };
    (rc == 0 && size.ws_row > 0)
        .then(|| (i32::from(size.ws_row), i32::from(size.ws_col)))
}

// ANCHOR: attached_start
/// `run` without `-d`, `start -a`: attach, start, copy the output, then
/// wait for the container's end and exit with its code. With `tty`, this
/// terminal is raw meanwhile and the container's gets its size.
async fn attached_start(
    docker: &Docker,
    id: &str,
    stdin: bool,
    tty: bool,
    removed: bool,
) -> Result<u8, Failure> {
    let options = q::AttachContainerOptions {
        stream: true,
        stdin,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let bollard::container::AttachContainerResults { output, input } =
        docker.attach_container(id, Some(options)).await?;
    if let Err(e) = docker
        .start_container(id, None::<q::StartContainerOptions>)
        .await
    {
        let failure = Failure::from(e);
        // docker's codes for a program that cannot be run.
        let code = if failure.message.contains("executable file not found")
            || failure.message.contains("no such file or directory")
        {
            127
        } else if failure.message.contains("permission denied") {
            126
        } else {
            EXIT_ENGINE
        };
        return Err(Failure { code, ..failure });
    }
    // The exit code comes from a wait sent once the output has ended,
    // for the container to be stopped (or removed, with --rm). docker's
    // CLI sends its wait before the start instead, and must, since
    // dockerd forgets a removed container at once; berth daemon answers
    // a wait for a container it has just removed with its exit code, so
    // the calls are made in an order that cannot race.
    let condition = if removed { "removed" } else { "not-running" };
    session(
        docker,
        tty.then_some(Pty::Container(id)),
        stdin,
        output,
        input,
    )
    .await?;
    wait(docker, id, condition).await
}
// ANCHOR_END: attached_start

/// This terminal's size as the API's `ConsoleSize` (`[height, width]`).
fn console_size() -> Option<Vec<usize>> {
    terminal_size().map(|(h, w)| vec![h as usize, w as usize])
}

/// The pty a session's terminal size goes to.
enum Pty<'a> {
    /// A container's (by id).
    Container(&'a str),
    /// An exec session's (by id).
    Exec(&'a str),
}

/// Give this terminal's size to `pty`.
async fn resize(docker: &Docker, pty: &Pty<'_>) {
    let Some((h, w)) = terminal_size() else {
        return;
    };
    let _ = match pty {
        Pty::Container(id) => {
            let size = q::ResizeContainerTTYOptions { h, w };
            docker.resize_container_tty(id, size).await
        }
        Pty::Exec(id) => {
            let size = q::ResizeExecOptions { h, w };
            docker.resize_exec(id, size).await
        }
    };
}

/// An attached session (`run`, `start -a`, `exec`): the output copied
/// here until it ends, stdin copied there if `interactive`. With a
/// `pty`, this terminal is raw meanwhile, and its size goes to the pty
/// at once and again at each `SIGWINCH` (the terminal was resized).
async fn session(
    docker: &Docker,
    pty: Option<Pty<'_>>,
    interactive: bool,
    mut output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let _raw = if pty.is_some() { Raw::enter() } else { None };
    let mut winch = match &pty {
        Some(pty) => {
            resize(docker, pty).await;
            signal(SignalKind::window_change()).ok()
        }
        None => None,
    };
    let forward = interactive.then(|| {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stdin = tokio::io::stdin();
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
            let _ = input.shutdown().await;
        })
    });
    let copied = loop {
        let resized = async {
            match winch.as_mut() {
                Some(winch) => winch.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok(chunk)) => emit(chunk),
                Some(Err(e)) => break Err(Failure::from(e)),
                None => break Ok(()),
            },
            Some(()) = resized => {
                if let Some(pty) = &pty {
                    resize(docker, pty).await;
                }
            }
        }
    };
    if let Some(forward) = forward {
        forward.abort();
    }
    copied
}
