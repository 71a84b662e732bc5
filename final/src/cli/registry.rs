//! `berth pull`, `push`, `login`, `logout`: the daemon does the work;
//! the client sends the credentials Docker's `config.json` holds for the
//! registry (`X-Registry-Auth`) and renders the progress messages — bars
//! on a terminal (indicatif), plain lines otherwise, as the docker CLI
//! does.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::Failure;
use crate::image::reference::{Reference, Version};
use crate::registry::auth::{self, Credentials};

/// A failure of docker's kind for these commands: exit code 1.
fn failed(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

/// A reference typed by the user, parsed as Docker does.
fn parse(name: &str) -> Result<Reference, Failure> {
    name.parse::<Reference>().map_err(|e| failed(e.to_string()))
}

/// The `X-Registry-Auth` header for `domain`, from `config.json` (none:
/// anonymous).
fn auth_header(domain: &str) -> Result<Option<String>, Failure> {
    let path = auth::config_path();
    let credentials = auth::load(&path, domain)
        .map_err(|e| failed(crate::child::error_chain(&e)))?;
    Ok((!credentials.is_empty())
        .then(|| auth::to_header(&credentials, &auth::config_key(domain))))
}

/// One progress message (Docker's `JSONMessage`).
#[derive(serde::Deserialize, Default)]
struct Message {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, rename = "progressDetail")]
    detail: Option<Detail>,
    #[serde(default, rename = "errorDetail")]
    error: Option<ErrorDetail>,
}

/// `progressDetail`.
#[derive(serde::Deserialize, Default)]
struct Detail {
    current: Option<u64>,
    total: Option<u64>,
}

/// `errorDetail`.
#[derive(serde::Deserialize, Default)]
struct ErrorDetail {
    message: Option<String>,
}

/// Draws the messages: a bar per layer on a terminal, lines otherwise.
struct Render {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
}

impl Render {
    fn new() -> Render {
        let tty = std::io::stdout().is_terminal();
        Render {
            multi: tty.then(MultiProgress::new),
            bars: HashMap::new(),
        }
    }

    fn line(&self, text: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => super::print(&format!("{text}\n")),
        }
    }

    fn show(&mut self, message: Message) -> Result<(), Failure> {
        if let Some(error) = message.error {
            return Err(failed(error.message.unwrap_or_default()));
        }
        let status = message.status.unwrap_or_default();
        let Some(id) = message.id else {
            if !status.is_empty() {
                self.line(&status);
            }
            return Ok(());
        };
        let bytes = message.detail.and_then(|d| Some((d.current?, d.total?)));
        let Some(multi) = &self.multi else {
            // Plain lines: every step but the byte counts.
            if bytes.is_none() {
                self.line(&format!("{id}: {status}"));
            }
            return Ok(());
        };
        let bar = self.bars.entry(id.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg:<18} {bar:40.cyan/blue} {bytes:>9}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(id.clone());
            bar
        });
        if let Some((current, total)) = bytes {
            bar.set_length(total);
            bar.set_position(current);
        }
        bar.set_message(status.clone());
        let done = [
            "Pull complete",
            "Already exists",
            "Pushed",
            "Layer already exists",
        ]
        .contains(&status.as_str())
            || status.starts_with("Mounted from");
        if done {
            bar.finish();
        }
        Ok(())
    }
}

/// `berth pull [--platform P] [-q] NAME`.
pub async fn pull(
    socket: &str,
    name: &str,
    platform: Option<String>,
    quiet: bool,
) -> Result<u8, Failure> {
    let reference = parse(name)?;
    let (from_image, tag) = split(&reference);
    let mut path = format!(
        "/images/create?fromImage={}&tag={}",
        encode(&from_image),
        encode(&tag)
    );
    if let Some(platform) = platform {
        path.push_str(&format!("&platform={}", encode(&platform)));
    }
    let mut render = (!quiet).then(Render::new);
    progress(socket, &path, auth_header(&reference.domain)?, |message| {
        match &mut render {
            Some(render) => render.show(message),
            None => match message.error {
                Some(error) => Err(failed(error.message.unwrap_or_default())),
                None => Ok(()),
            },
        }
    })
    .await?;
    // The docker CLI's last line too, quiet or not.
    super::print(&format!("{reference}\n"));
    Ok(0)
}

/// The repository and tag (or digest) the API takes for `reference`.
fn split(reference: &Reference) -> (String, String) {
    let repository = format!("{}/{}", reference.domain, reference.path);
    match &reference.version {
        Version::Tag(tag) => (repository, tag.clone()),
        Version::Digest(digest) => (repository, digest.to_string()),
    }
}

/// `berth push NAME[:TAG]`.
pub async fn push(socket: &str, name: &str) -> Result<u8, Failure> {
    let reference = parse(name)?;
    let (repository, tag) = split(&reference);
    let path = format!("/images/{repository}/push?tag={}", encode(&tag));
    let mut render = Render::new();
    progress(socket, &path, auth_header(&reference.domain)?, |message| {
        render.show(message)
    })
    .await?;
    Ok(0)
}

/// `berth build [-t TAG]... [-f FILE] [--build-arg K=V]... [--no-cache]
/// DIR`: the directory as a tar to `POST /build`, the output as it comes.
pub async fn build(
    socket: &str,
    dir: &std::path::Path,
    tags: &[String],
    file: Option<&str>,
    build_args: &[String],
    no_cache: bool,
) -> Result<u8, Failure> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir).map_err(|e| {
        failed(format!("read the context {}: {e}", dir.display()))
    })?;
    let context = tar
        .into_inner()
        .map_err(|e| failed(format!("read the context: {e}")))?;
    let mut path = String::from("/build?rm=1");
    for tag in tags {
        path.push_str(&format!("&t={}", encode(tag)));
    }
    if let Some(file) = file {
        path.push_str(&format!("&dockerfile={}", encode(file)));
    }
    let mut args = serde_json::Map::new();
    for arg in build_args {
        let (k, v) = arg.split_once('=').ok_or_else(|| {
            failed(format!("--build-arg {arg}: expected KEY=VALUE"))
        })?;
        args.insert(k.to_owned(), v.into());
    }
    if !args.is_empty() {
        path.push_str(&format!(
            "&buildargs={}",
            encode(&serde_json::Value::Object(args).to_string())
        ));
    }
    if no_cache {
        path.push_str("&nocache=1");
    }
    let headers = [("content-type", "application/x-tar".to_owned())];
    let response = request(socket, &path, &headers, context).await?;
    each_line(response, |value| {
        if let Some(text) = value["stream"].as_str() {
            super::print(text);
        }
        match value["errorDetail"]["message"].as_str() {
            Some(message) => Err(failed(message.to_owned())),
            None => Ok(()),
        }
    })
    .await?;
    Ok(0)
}

/// POST `path` with `auth` as `X-Registry-Auth`, and hand each progress
/// message of the answer to `each`; an error status is the daemon's
/// one-line refusal.
async fn progress(
    socket: &str,
    path: &str,
    auth: Option<String>,
    mut each: impl FnMut(Message) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut headers = Vec::new();
    if let Some(auth) = auth {
        headers.push(("x-registry-auth", auth));
    }
    let response = request(socket, path, &headers, Vec::new()).await?;
    each_line(response, |value| {
        match serde_json::from_value::<Message>(value) {
            Ok(message) => each(message),
            Err(_) => Ok(()),
        }
    })
    .await
}

/// The daemon's answer: its refusal as one line if it refused, else each
/// JSON line of its body to `each` as it comes.
async fn each_line(
    response: hyper::Response<hyper::body::Incoming>,
    mut each: impl FnMut(serde_json::Value) -> Result<(), Failure>,
) -> Result<(), Failure> {
    use http_body_util::BodyExt;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = http_body_util::Limited::new(body, 1 << 20)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let answer: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or_default();
        let message = answer["message"].as_str().unwrap_or(status.as_str());
        return Err(failed(format!("Error response from daemon: {message}")));
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            failed(format!("the daemon's answer broke off: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(value) = serde_json::from_slice(&line) {
                each(value)?;
            }
        }
    }
    Ok(())
}

/// Percent-encode a query value.
fn encode(value: &str) -> String {
    crate::registry::client::encode(value)
}

/// `berth login [-u USER] [-p PASSWORD | --password-stdin] [SERVER]`:
/// the daemon checks the credentials with the registry (`POST /auth`);
/// they are then written to Docker's `config.json`.
pub async fn login(
    socket: &str,
    server: Option<&str>,
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
) -> Result<u8, Failure> {
    let domain =
        crate::daemon::distribution::server_domain(server.unwrap_or(""));
    let username = match username {
        Some(username) => username,
        None => prompt("Username: ")?,
    };
    let password = match (password, password_stdin) {
        (Some(_), true) => {
            return Err(failed(
                "--password and --password-stdin are mutually exclusive",
            ));
        }
        (Some(password), false) => password,
        (None, true) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| {
                    failed(format!("read the password from stdin: {e}"))
                })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => prompt("Password: ")?,
    };
    if username.is_empty() {
        return Err(failed("Error: Non-null Username Required"));
    }
    let credentials = Credentials {
        username,
        password,
        identity_token: String::new(),
    };
    let body = serde_json::json!({
        "username": credentials.username,
        "password": credentials.password,
        "serveraddress": auth::config_key(&domain),
    });
    let (status, answer) = post_json(socket, "/auth", &body).await?;
    if status != 200 {
        let message = answer["message"]
            .as_str()
            .unwrap_or("login failed")
            .to_owned();
        return Err(failed(format!("Error response from daemon: {message}")));
    }
    let path = auth::config_path();
    auth::save(&path, &domain, Some(&credentials))
        .map_err(|e| failed(crate::child::error_chain(&e)))?;
    super::print("Login Succeeded\n");
    Ok(0)
}

/// `berth logout [SERVER]`.
pub fn logout(server: Option<&str>) -> Result<u8, Failure> {
    let domain =
        crate::daemon::distribution::server_domain(server.unwrap_or(""));
    let key = auth::config_key(&domain);
    let path = auth::config_path();
    let existed = auth::save(&path, &domain, None)
        .map_err(|e| failed(crate::child::error_chain(&e)))?;
    if existed {
        super::print(&format!("Removing login credentials for {key}\n"));
    } else {
        super::print(&format!("Not logged in to {key}\n"));
    }
    Ok(0)
}

/// A line read from the terminal after `prompt` (on stderr).
fn prompt(prompt: &str) -> Result<String, Failure> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| failed(format!("read {prompt}: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// POST `body` as JSON to the daemon's `path`: the status and the JSON
/// answer.
async fn post_json(
    socket: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), Failure> {
    use http_body_util::BodyExt;
    let headers = [("content-type", "application/json".to_owned())];
    let response =
        request(socket, path, &headers, body.to_string().into_bytes()).await?;
    let status = response.status().as_u16();
    let bytes = http_body_util::Limited::new(response.into_body(), 1 << 20)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}

/// One POST to the daemon over its socket (bollard has no call for
/// `/auth`, and drops the `id` of push messages).
async fn request(
    socket: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
    let stream =
        tokio::net::UnixStream::connect(socket).await.map_err(|e| {
            failed(format!("cannot connect to the daemon at {socket}: {e}"))
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| failed(format!("{socket}: {e}")))?;
    tokio::spawn(connection);
    let mut builder =
        hyper::Request::post(format!("/v{}{path}", crate::daemon::API_VERSION))
            .header(hyper::header::HOST, "berth");
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let request = builder
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| failed(e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(120), sender.send_request(request))
        .await
        .map_err(|_| failed(format!("POST {path}: no answer in 120 s")))?
        .map_err(|e| failed(format!("POST {path}: {e}")))
}
