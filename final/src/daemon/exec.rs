//! `docker exec`: another process in a running container. The daemon
//! keeps what `POST /containers/ID/exec` asked for; `POST /exec/ID/start`
//! turns it into the runtime spec's `process` (the container's own, with
//! the command, environment, directory, user and terminal of the
//! request) and hands it to the container's shim, which runs `runtime
//! exec` and holds the new process's stdio as it holds the first one's.
//!
//! Simplification: exec sessions live in the daemon's memory only; after
//! a daemon restart `docker exec inspect` of an older session is a 404
//! (the process itself, held by the shim, is unaffected). Docker keeps
//! them in memory too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bollard::models::ExecConfig;
use serde_json::{Value, json};

use super::containers::{Engine, Error, blocking, random_id, resolve_user};
use crate::shim::client::Client;
use crate::shim::protocol::{Status as ShimStatus, Stream, frame_header};

/// One `POST /containers/ID/exec`.
#[derive(Debug, Clone)]
pub struct Session {
    /// The container.
    pub container: String,
    /// What was asked.
    pub config: ExecConfig,
    /// `start` was called.
    pub started: bool,
    /// The runtime could not start it: Docker's exit code for that (127:
    /// no such program, 126: any other failure).
    pub failed: Option<i64>,
}

/// The exec sessions of every container.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session `id`, or Docker's 404.
    pub fn get(&self, id: &str) -> Result<Session, Error> {
        self.lock().get(id).cloned().ok_or_else(|| {
            Error::NotFound(format!("No such exec instance: {id}"))
        })
    }

    /// Forget every session of `container` (it was removed).
    pub fn forget(&self, container: &str) {
        self.lock().retain(|_, s| s.container != container);
    }
}

/// `POST /containers/ID/exec`: check and keep the request.
pub fn create(
    engine: &Engine,
    container: &str,
    config: ExecConfig,
) -> Result<String, Error> {
    let record = engine.record(container)?;
    if !record.state.status.is_running() {
        return Err(Error::not_running(container));
    }
    if config.cmd.as_ref().is_none_or(Vec::is_empty) {
        return Err(Error::BadRequest("No exec command specified".into()));
    }
    let id = random_id()?;
    let action = format!(
        "exec_create: {}",
        config.cmd.clone().unwrap_or_default().join(" ")
    );
    engine.container_event(&action, &record, &[("execID", id.clone())]);
    engine.execs.lock().insert(
        id.clone(),
        Session {
            container: container.to_owned(),
            config,
            started: false,
            failed: None,
        },
    );
    Ok(id)
}

/// The runtime spec's `process` for `config`, from the container's
/// bundle (`dir/config.json`): its command, environment (added to the
/// container's), working directory, user, terminal; all capabilities if
/// privileged.
fn process(dir: &Path, config: &ExecConfig) -> Result<Value, Error> {
    let path = dir.join("config.json");
    let spec: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            Error::Internal(format!("cannot read {}", path.display()))
        })?;
    let mut process = spec["process"].clone();
    process["args"] = json!(config.cmd.clone().unwrap_or_default());
    process["terminal"] = json!(config.tty == Some(true));
    match super::spec::console_size(config.console_size.as_deref()) {
        Some((height, width)) if config.tty == Some(true) => {
            process["consoleSize"] =
                json!({ "height": height, "width": width });
        }
        _ => {
            if let Some(process) = process.as_object_mut() {
                process.remove("consoleSize");
            }
        }
    }
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for pair in config.env.clone().unwrap_or_default() {
        let key = pair.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(pair);
    }
    process["env"] = json!(env);
    if let Some(cwd) = config.working_dir.clone().filter(|w| !w.is_empty()) {
        process["cwd"] = json!(cwd);
    }
    if let Some(user) = config.user.clone().filter(|u| !u.is_empty()) {
        let (uid, gid, additional) = resolve_user(&dir.join("rootfs"), &user)?;
        process["user"] =
            json!({ "uid": uid, "gid": gid, "additionalGids": additional });
    }
    if config.privileged == Some(true) {
        let all = super::spec::all_caps();
        process["capabilities"] =
            json!({ "bounding": all, "effective": all, "permitted": all });
    }
    Ok(process)
}

/// `POST /exec/ID/start`: run it through the container's shim. The
/// stream carries its stdio (framed without a terminal) unless `detach`.
pub async fn start(
    engine: &Arc<Engine>,
    id: &str,
    detach: bool,
    console_size: Option<Vec<usize>>,
) -> Result<(Session, std::os::unix::net::UnixStream), Error> {
    let session = {
        let mut sessions = engine.execs.lock();
        let session = sessions.get_mut(id).ok_or_else(|| {
            Error::NotFound(format!("No such exec instance: {id}"))
        })?;
        if session.started {
            return Err(Error::Conflict(format!(
                "Error: Exec command {id} has already run"
            )));
        }
        session.started = true;
        session.clone()
    };
    let record = engine.record(&session.container)?;
    if !record.state.status.is_running() {
        return Err(Error::not_running(&session.container));
    }
    let action = format!(
        "exec_start: {}",
        session.config.cmd.clone().unwrap_or_default().join(" ")
    );
    engine.container_event(&action, &record, &[("execID", id.to_owned())]);
    let dir = engine.container_dir(&session.container);
    let client = Client::new(&engine.shim_dir(&session.container));
    let mut config = session.config.clone();
    // The start's size, if it brings one, is the later word.
    if console_size.is_some() {
        config.console_size = console_size;
    }
    let id = id.to_owned();
    let owned = id.clone();
    let tty = config.tty == Some(true);
    let ran = blocking(move || -> Result<_, Error> {
        let process = process(&dir, &config)?;
        let stdin = config.attach_stdin == Some(true) && !detach;
        Ok(client.exec(&owned, process, tty, stdin, !detach)?)
    })
    .await?;
    match ran {
        Ok(stream) => Ok((session, stream)),
        // As dockerd: an attached client is told on its stream, and the
        // session's exit code says what kind of failure it was.
        Err(Error::Internal(message)) if !detach => {
            let code = if message.contains("executable file not found") {
                127
            } else {
                126
            };
            if let Some(s) = engine.execs.lock().get_mut(&id) {
                s.failed = Some(code);
            }
            let (ours, mut theirs) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| Error::Internal(format!("socketpair: {e}")))?;
            let text = format!("OCI runtime exec failed: {message}\r\n");
            let bytes = if tty {
                text.into_bytes()
            } else {
                let mut framed =
                    frame_header(Stream::Stdout, text.len() as u32).to_vec();
                framed.extend_from_slice(text.as_bytes());
                framed
            };
            std::io::Write::write_all(&mut theirs, &bytes)
                .map_err(|e| Error::Internal(format!("socketpair: {e}")))?;
            Ok((session, ours))
        }
        Err(e) => Err(e),
    }
}

/// `GET /exec/ID/json`: Docker's shape, the state from the shim.
pub async fn inspect(engine: &Arc<Engine>, id: &str) -> Result<Value, Error> {
    let session = engine.execs.get(id)?;
    let client = Client::new(&engine.shim_dir(&session.container));
    let owned = id.to_owned();
    let state = if session.started {
        blocking(move || client.exec_state(&owned)).await?.ok()
    } else {
        None
    };
    let (pid, running, exit) = match (state, session.failed) {
        (_, Some(code)) => (0, false, Some(code)),
        (Some((pid, status, exit)), None) => (
            pid,
            status == ShimStatus::Running,
            exit.map(|e| i64::from(e.code)),
        ),
        (None, None) => (0, false, None),
    };
    let config = &session.config;
    let cmd = config.cmd.clone().unwrap_or_default();
    Ok(json!({
        "ID": id,
        "Running": running,
        "ExitCode": exit,
        "ProcessConfig": {
            "tty": config.tty == Some(true),
            "entrypoint": cmd.first(),
            "arguments": cmd.get(1..).unwrap_or_default(),
            "privileged": config.privileged == Some(true),
            "user": config.user.clone().unwrap_or_default(),
        },
        "OpenStdin": config.attach_stdin == Some(true),
        "OpenStderr": config.attach_stderr == Some(true),
        "OpenStdout": config.attach_stdout == Some(true),
        "CanRemove": false,
        "ContainerID": session.container,
        "DetachKeys": "",
        "Pid": pid,
    }))
}

/// `POST /exec/ID/resize?h=&w=`.
pub async fn resize(
    engine: &Arc<Engine>,
    id: &str,
    rows: u16,
    cols: u16,
) -> Result<(), Error> {
    let session = engine.execs.get(id)?;
    let client = Client::new(&engine.shim_dir(&session.container));
    let owned = id.to_owned();
    Ok(blocking(move || client.resize(rows, cols, Some(&owned))).await??)
}
