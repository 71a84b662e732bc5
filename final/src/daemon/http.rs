//! The Docker Engine API on a unix socket: HTTP/1.1 with hyper, a router
//! by hand (method and path segments, an optional `/v1.NN` prefix), JSON
//! in and out, errors as `{"message": …}` with Docker's status codes, and
//! the hijacked connection of `attach`.
//!
//! Version negotiation: `/_ping` answers with an `API-Version` header; the
//! docker CLI then uses the lower of its version and ours. A request for
//! a newer version than ours is refused with Docker's message.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::containers::{
    Engine, Error, Record, Status, blocking, parse_signal, unix_seconds,
};
use super::{API_VERSION, MIN_API_VERSION, images};
use crate::channel_io::{ChannelReader, ChannelWriter};
use crate::shim::logs;
use crate::shim::protocol::{Stream, frame_header};

/// The body of every response.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// The largest JSON body accepted.
pub const MAX_JSON: usize = 4 << 20;

// ANCHOR: serve
/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let engine = engine.clone();
                async move {
                    let response = handle(engine, request).await;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
// ANCHOR_END: serve

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn respond(
    status: StatusCode,
    body: Body,
    content_type: &str,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        content_type.parse().unwrap_or_else(|_| unreachable!()),
    );
    headers.insert(
        "Api-Version",
        API_VERSION.parse().unwrap_or_else(|_| unreachable!()),
    );
    headers
        .insert("Ostype", "linux".parse().unwrap_or_else(|_| unreachable!()));
    headers
        .insert("Server", "berth".parse().unwrap_or_else(|_| unreachable!()));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    respond(status, full(bytes), "application/json")
}

fn empty(status: StatusCode) -> Response<Body> {
    respond(status, full(Bytes::new()), "text/plain")
}

fn error_response(error: &Error) -> Response<Body> {
    let status = match error {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::NotModified(_) => return empty(StatusCode::NOT_MODIFIED),
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(status, &json!({ "message": error.to_string() }))
}

/// The credentials of the request's `X-Registry-Auth` (none if absent).
fn registry_auth(
    request: &Request<Incoming>,
) -> crate::registry::auth::Credentials {
    request
        .headers()
        .get("x-registry-auth")
        .and_then(|v| v.to_str().ok())
        .map(crate::registry::auth::from_header)
        .unwrap_or_default()
}

/// The query string, decoded.
fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding, `+` as a space.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex =
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE"))
}

/// The body, at most [`MAX_JSON`] bytes, as JSON.
async fn json_body<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Error> {
    let bytes = Limited::new(request.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::BadRequest(format!(
                    "request body is larger than {} MiB",
                    MAX_JSON >> 20
                ))
            } else {
                Error::BadRequest(format!("cannot read the request body: {e}"))
            }
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Err(Error::BadRequest("request body is empty".into()));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest(format!("invalid JSON: {e}")))
}

/// `/v1.45/containers/json` → (`Some("1.45")`, `/containers/json`).
fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v")
        && let Some(slash) = rest.find('/')
        && rest[..slash]
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
    {
        return (Some(&rest[..slash]), &rest[slash..]);
    }
    (None, path)
}

/// `1.45` as (1, 45).
fn version_tuple(version: &str) -> (u32, u32) {
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    (major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
}

async fn handle(
    engine: Arc<Engine>,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    super::debug(
        &engine.config,
        format_args!("api {} {}", request.method(), request.uri()),
    );
    let (version, route) = split_version(&path);
    if let Some(version) = version {
        if version_tuple(version) > version_tuple(API_VERSION) {
            return error_response(&Error::BadRequest(format!(
                "client version {version} is too new. Maximum supported API version is {API_VERSION}"
            )));
        }
        if version_tuple(version) < version_tuple(MIN_API_VERSION) {
            return error_response(&Error::BadRequest(format!(
                "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
            )));
        }
    }
    let route = route.to_owned();
    match dispatch(engine, request, &route).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

async fn dispatch(
    engine: Arc<Engine>,
    request: Request<Incoming>,
    route: &str,
) -> Result<Response<Body>, Error> {
    let method = request.method().clone();
    let q = query(&request);
    let segments: Vec<&str> = route.trim_matches('/').split('/').collect();
    let ok = |value: Value| Ok(json_response(StatusCode::OK, &value));
    match (&method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => {
            let mut response = respond(
                StatusCode::OK,
                full("OK"),
                "text/plain; charset=utf-8",
            );
            let headers = response.headers_mut();
            headers.insert(
                "Builder-Version",
                "1".parse().unwrap_or_else(|_| unreachable!()),
            );
            headers.insert(
                "Docker-Experimental",
                "false".parse().unwrap_or_else(|_| unreachable!()),
            );
            headers.insert(
                "Cache-Control",
                "no-cache, no-store, must-revalidate"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            );
            Ok(response)
        }
        (&Method::GET, ["version"]) => ok(version_info()),
        (&Method::GET, ["events"]) => events(&engine, &q),
        (&Method::GET, ["info"]) => ok(info(&engine)),
        (&Method::GET, ["images", "json"]) => ok(images::list(&engine).await?),
        (&Method::POST, ["images", "load"]) => load(engine, request).await,
        (&Method::GET, ["images", "get"]) => {
            let names = query_all(&request, "names");
            if names.is_empty() {
                return Err(Error::BadRequest("no image names given".into()));
            }
            export(&engine, &names).await
        }
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            export(&engine, &[decode(&name.join("/"))]).await
        }
        (&Method::POST, ["images", "create"])
            if q.contains_key("fromImage") =>
        {
            let credentials = registry_auth(&request);
            super::distribution::pull(&engine, &q, credentials).await
        }
        (&Method::POST, ["images", name @ .., "push"]) if !name.is_empty() => {
            let credentials = registry_auth(&request);
            let tag = q.get("tag").cloned().unwrap_or_default();
            super::distribution::push(
                &engine,
                &decode(&name.join("/")),
                &tag,
                credentials,
            )
            .await
        }
        (&Method::POST, ["build"]) => {
            let tags = query_all(&request, "t");
            let options = super::build::options(&q, &tags)?;
            let reader = body_reader(request);
            // Dropped, on any return and if the client leaves, the
            // workspace takes the build's directory with it.
            let workspace = super::build::receive(&engine, reader).await?;
            let planned = {
                let (dir, options) =
                    (workspace.path().to_owned(), options.clone());
                blocking(move || super::build::plan(&dir, &options)).await?
            };
            let (steps, ignore) = planned?;
            super::distribution::stream(move |progress| async move {
                let dir = workspace.path().to_owned();
                let built = super::build::run(
                    &engine, &dir, steps, ignore, &options, &progress,
                )
                .await;
                super::build::cleanup(&engine, &dir).await;
                drop(workspace);
                built.map(drop)
            })
            .await
        }
        (&Method::POST, ["auth"]) => {
            let config: crate::registry::auth::AuthConfig =
                json_body(request).await?;
            ok(super::distribution::login(&engine, config).await?)
        }
        (&Method::POST, ["images", "create"]) => {
            if q.get("fromSrc").map(String::as_str) != Some("-") {
                return Err(Error::BadRequest(
                    "give fromImage (a pull) or fromSrc=- (an import from the request body)".into(),
                ));
            }
            let repo = q.get("repo").cloned().unwrap_or_default();
            let tag = q.get("tag").cloned().unwrap_or_default();
            let reader = body_reader(request);
            let id = images::import(&engine, reader, &repo, &tag).await?;
            let line = json!({ "status": id }).to_string() + "\n";
            Ok(respond(StatusCode::OK, full(line), "application/json"))
        }
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            ok(images::inspect(&engine, &decode(&name.join("/"))).await?)
        }
        (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            let repo = q.get("repo").cloned().unwrap_or_default();
            let tag = q.get("tag").cloned().unwrap_or_default();
            images::tag(&engine, &decode(&name.join("/")), &repo, &tag).await?;
            Ok(empty(StatusCode::CREATED))
        }
        (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            ok(images::remove(
                &engine,
                &decode(&name.join("/")),
                flag(&q, "force"),
            )
            .await?)
        }
        (&Method::POST, ["containers", "create"]) => {
            let name = q.get("name").cloned();
            let mut body: bollard::models::ContainerCreateBody =
                json_body(request).await?;
            let host = body.host_config.take().unwrap_or_default();
            let config: bollard::models::ContainerConfig =
                serde_json::from_value(
                    serde_json::to_value(&body).unwrap_or_default(),
                )
                .map_err(|e| Error::BadRequest(format!("invalid JSON: {e}")))?;
            let engine = engine.clone();
            let record =
                blocking(move || engine.create(name.as_deref(), config, host))
                    .await??;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({ "Id": record.id, "Warnings": [] }),
            ))
        }
        (&Method::GET, ["containers", "json"]) => ok(list(&engine, &q)?),
        (&Method::POST, ["commit"]) => {
            let container = q.get("container").cloned().unwrap_or_default();
            let id = engine.resolve(&container)?;
            let repo = q.get("repo").cloned().unwrap_or_default();
            let tag = q.get("tag").cloned().unwrap_or_default();
            let name = (!repo.is_empty())
                .then(|| images::reference_of(&repo, &tag))
                .transpose()?;
            let comment = q.get("comment").cloned().unwrap_or_default();
            let author = q.get("author").cloned().unwrap_or_default();
            let image =
                super::changes::commit(&engine, &id, name, comment, author)
                    .await?;
            engine.event_of("commit", &id, &[]);
            Ok(json_response(StatusCode::CREATED, &json!({ "Id": image })))
        }
        (&Method::POST, ["containers", name, "exec"]) => {
            let id = engine.resolve(&decode(name))?;
            let config: bollard::models::ExecConfig =
                json_body(request).await?;
            let exec = super::exec::create(&engine, &id, config)?;
            Ok(json_response(StatusCode::CREATED, &json!({ "Id": exec })))
        }
        (&Method::POST, ["exec", id, "start"]) => {
            let id = decode(id);
            let mut request = request;
            let body = Limited::new(request.body_mut(), MAX_JSON)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let start: bollard::models::ExecStartConfig =
                serde_json::from_slice(&body).unwrap_or_default();
            let detach = start.detach == Some(true);
            let (session, stream) =
                super::exec::start(&engine, &id, detach, start.console_size)
                    .await?;
            if detach {
                drop(stream);
                return Ok(empty(StatusCode::OK));
            }
            let tty = session.config.tty == Some(true);
            Ok(hijack(&mut request, stream, tty))
        }
        (&Method::GET, ["exec", id, "json"]) => {
            ok(super::exec::inspect(&engine, &decode(id)).await?)
        }
        (&Method::POST, ["exec", id, "resize"]) => {
            let h: u16 = q.get("h").and_then(|v| v.parse().ok()).unwrap_or(0);
            let w: u16 = q.get("w").and_then(|v| v.parse().ok()).unwrap_or(0);
            super::exec::resize(&engine, &decode(id), h, w).await?;
            Ok(empty(StatusCode::OK))
        }
        // A wait sent alongside `start` may arrive after its container
        // ended and was removed (`--rm`): it gets the exit code all the
        // same (Docker would answer 404; its CLI orders the two calls).
        (&Method::POST, ["containers", id, "wait"])
            if engine.resolve(&decode(id)).is_err()
                && engine.removed_exit(&decode(id)).is_some() =>
        {
            let code = engine.removed_exit(&decode(id)).unwrap_or_default();
            ok(json!({ "Error": null, "StatusCode": code }))
        }
        (_, ["containers", name, rest @ ..]) => {
            let id = engine.resolve(&decode(name))?;
            container_route(engine, request, &method, &id, rest, &q).await
        }
        _ => Err(Error::NotFound(format!("page not found: {method} {route}"))),
    }
}

async fn container_route(
    engine: Arc<Engine>,
    request: Request<Incoming>,
    method: &Method,
    id: &str,
    rest: &[&str],
    q: &HashMap<String, String>,
) -> Result<Response<Body>, Error> {
    match (method, rest) {
        (&Method::GET, ["json"]) => Ok(json_response(
            StatusCode::OK,
            &inspect(&engine.record(id)?, &engine),
        )),
        (&Method::POST, ["start"]) => {
            engine.start(id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["kill"]) => {
            let name =
                q.get("signal").cloned().unwrap_or_else(|| "KILL".into());
            let signal = parse_signal(&name).ok_or_else(|| {
                Error::BadRequest(format!("invalid signal: {name}"))
            })?;
            engine.kill(id, signal).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["stop"]) => {
            let timeout =
                q.get("t").or(q.get("timeout")).and_then(|t| t.parse().ok());
            engine.stop(id, timeout).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["wait"]) => wait(
            engine,
            id,
            q.get("condition")
                .map(String::as_str)
                .unwrap_or("not-running"),
        ),
        (&Method::POST, ["attach"]) => attach(engine, request, id, q).await,
        (&Method::POST, ["resize"]) => {
            let h: u16 = q.get("h").and_then(|v| v.parse().ok()).unwrap_or(0);
            let w: u16 = q.get("w").and_then(|v| v.parse().ok()).unwrap_or(0);
            let record = engine.record(id)?;
            if !record.state.status.is_running() {
                return Err(Error::not_running(id));
            }
            let client = crate::shim::client::Client::new(
                &engine.config.exec_root.join(id),
            );
            blocking(move || client.resize(h, w, None)).await??;
            Ok(empty(StatusCode::OK))
        }
        (&Method::GET, ["logs"]) => logs(engine, id, q).await,
        (&Method::HEAD | &Method::GET | &Method::PUT, ["archive"]) => {
            archive(engine, request, id, q).await
        }
        (&Method::GET, ["stats"]) => {
            // Docker's default is a stream.
            let stream = q.get("stream").is_none_or(|_| flag(q, "stream"));
            let body =
                super::stats::serve(&engine, id, stream, flag(q, "one-shot"))
                    .await?;
            Ok(respond(StatusCode::OK, body, "application/json"))
        }
        (&Method::GET, ["top"]) => {
            let ps_args = q.get("ps_args").cloned().unwrap_or_default();
            Ok(json_response(
                StatusCode::OK,
                &super::changes::top(&engine, id, &ps_args).await?,
            ))
        }
        (&Method::GET, ["changes"]) => Ok(json_response(
            StatusCode::OK,
            &super::changes::diff(&engine, id).await?,
        )),
        (&Method::POST, [which @ ("pause" | "unpause")]) => {
            engine.pause(id, *which == "pause").await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["restart"]) => {
            let timeout =
                q.get("t").or(q.get("timeout")).and_then(|t| t.parse().ok());
            match engine.stop(id, timeout).await {
                Ok(()) | Err(Error::NotModified(_)) => {}
                Err(e) => return Err(e),
            }
            engine.start(id).await?;
            engine.event_of("restart", id, &[]);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["rename"]) => {
            let name = q.get("name").cloned().unwrap_or_default();
            // It writes the record durably (an fsync): off the async
            // threads.
            let (renaming, id) = (engine.clone(), id.to_owned());
            blocking(move || renaming.rename(&id, &name)).await??;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, []) => {
            engine.remove(id, flag(q, "force")).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(Error::NotFound(format!(
            "page not found: {method} /containers/{id}/{}",
            rest.join("/")
        ))),
    }
}

fn version_info() -> Value {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "Platform": { "Name": "berth" },
        "Components": [{ "Name": "Engine", "Version": version, "Details": { "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": std::env::consts::ARCH, "KernelVersion": kernel } }],
        "Version": version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", other => other },
        "KernelVersion": kernel,
        "GitCommit": "",
        "GoVersion": "",
        "BuildTime": "",
    })
}

fn info(engine: &Engine) -> Value {
    let records = engine.records();
    let count =
        |s: Status| records.iter().filter(|r| r.state.status == s).count();
    let images = crate::image::lookup::list(&engine.store)
        .map(|i| i.len())
        .unwrap_or(0);
    let runtimes: serde_json::Map<String, Value> = engine
        .config
        .runtimes
        .iter()
        .map(|(name, path)| (name.clone(), json!({ "path": path })))
        .collect();
    json!({
        "ID": "",
        "Containers": records.len(),
        "ContainersRunning": count(Status::Running),
        "ContainersPaused": count(Status::Paused),
        "ContainersStopped": count(Status::Exited) + count(Status::Created) + count(Status::Dead),
        "Images": images,
        "Driver": "overlay",
        "DockerRootDir": engine.config.data_root,
        "OperatingSystem": "Linux",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "MemTotal": super::stats::host_memory(),
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "Name": nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": runtimes,
        "DefaultRuntime": engine.config.default_runtime,
        "CgroupDriver": "cgroupfs",
        "LoggingDriver": "json-file",
        "SecurityOptions": [],
        "Warnings": [],
    })
}

/// Docker's `units.HumanDuration`: how `docker ps` says how long ago.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

fn since(time: &str) -> Duration {
    crate::time::parse_rfc3339(time)
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// `docker ps`'s STATUS column.
fn status_text(record: &Record) -> String {
    let state = &record.state;
    match state.status {
        Status::Created => "Created".into(),
        Status::Running => {
            format!("Up {}", human_duration(since(&state.started_at)))
        }
        Status::Paused => {
            format!("Up {} (Paused)", human_duration(since(&state.started_at)))
        }
        Status::Exited => format!(
            "Exited ({}) {} ago",
            state.exit_code,
            human_duration(since(&state.finished_at))
        ),
        Status::Dead => "Dead".into(),
    }
}

fn command_text(record: &Record) -> String {
    super::spec::args(&record.config)
        .unwrap_or_default()
        .join(" ")
}

/// `GET /containers/json?all=&filters=`: running ones, or all; filters
/// by `name`, `status`, `label`, `id`.
fn list(engine: &Engine, q: &HashMap<String, String>) -> Result<Value, Error> {
    let all = flag(q, "all");
    let filters: HashMap<String, Value> =
        match q.get("filters").filter(|f| !f.is_empty()) {
            Some(f) => serde_json::from_str(f).map_err(|e| {
                Error::BadRequest(format!("invalid filter: {e}"))
            })?,
            None => HashMap::new(),
        };
    // Filters come as {"name": {"x": true}} or {"name": ["x"]}.
    let values = |key: &str| -> Vec<String> {
        match filters.get(key) {
            Some(Value::Object(map)) => map.keys().cloned().collect(),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let (names, statuses, labels, ids) = (
        values("name"),
        values("status"),
        values("label"),
        values("id"),
    );
    let mut records = engine.records();
    records.sort_by(|a, b| b.created.cmp(&a.created));
    let mut out = Vec::new();
    for record in records {
        let status = record.state.status;
        if !all && statuses.is_empty() && !status.is_running() {
            continue;
        }
        if !names.is_empty()
            && !names
                .iter()
                .any(|n| record.name.contains(n.trim_start_matches('/')))
        {
            continue;
        }
        if !statuses.is_empty()
            && !statuses.iter().any(|s| s == status.as_str())
        {
            continue;
        }
        if !ids.is_empty() && !ids.iter().any(|i| record.id.starts_with(i)) {
            continue;
        }
        let record_labels = record.config.labels.clone().unwrap_or_default();
        let label_match = |l: &String| match l.split_once('=') {
            Some((k, v)) => record_labels.get(k) == Some(&v.to_owned()),
            None => record_labels.contains_key(l),
        };
        if !labels.iter().all(label_match) {
            continue;
        }
        out.push(json!({
            "Id": record.id,
            "Names": [format!("/{}", record.name)],
            "Image": record.image,
            "ImageID": record.image_id,
            "Command": command_text(&record),
            "Created": unix_seconds(&record.created),
            "Ports": [],
            "Labels": record_labels,
            "State": status.as_str(),
            "Status": status_text(&record),
            "HostConfig": { "NetworkMode": record.host_config.network_mode.clone().unwrap_or_else(|| "default".into()) },
            "NetworkSettings": { "Networks": {} },
            "Mounts": [],
        }));
    }
    Ok(Value::Array(out))
}

/// `GET /containers/ID/json`.
fn inspect(record: &Record, engine: &Engine) -> Value {
    let args = super::spec::args(&record.config).unwrap_or_default();
    let dir = engine.config.data_root.join("containers").join(&record.id);
    let state = &record.state;
    let status = state.status;
    json!({
        "Id": record.id,
        "Created": record.created,
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.get(1..).unwrap_or_default(),
        "State": {
            "Status": status.as_str(),
            "Running": status == Status::Running || status == Status::Paused,
            "Paused": status == Status::Paused,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": status == Status::Dead,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at,
            "FinishedAt": state.finished_at,
        },
        "Image": record.image_id,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": dir.join(logs::FILE),
        "Name": format!("/{}", record.name),
        "RestartCount": 0,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": record.host_config,
        "GraphDriver": {
            "Name": "overlay",
            "Data": { "UpperDir": dir.join("upper"), "WorkDir": dir.join("work"), "MergedDir": dir.join("rootfs") },
        },
        "Mounts": [],
        "Config": record.config,
        "NetworkSettings": { "Networks": {} },
    })
}

/// `GET /events?since=&until=&filters=`: the events kept since `since`,
/// then those to come until `until` (for ever without it), one JSON
/// object per line.
fn events(
    engine: &Engine,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, Error> {
    use super::events::{Filter, parse_time};
    let time = |key: &str| {
        q.get(key)
            .filter(|t| !t.is_empty())
            .map(|t| parse_time(t))
            .transpose()
    };
    let (since, until) = (time("since")?, time("until")?);
    let filter = Filter::parse(q.get("filters").map_or("", String::as_str))?;
    let (past, mut live) = engine.events.subscribe(since);
    let (mut sender, body) = channel_body();
    tokio::spawn(async move {
        let now = || {
            SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        };
        let send = |event: &super::events::Event| {
            let mut line = event.to_json().to_string();
            line.push('\n');
            Bytes::from(line)
        };
        for event in past.iter().filter(|e| filter.matches(e)) {
            if until.is_some_and(|u| event.time_nano > u) {
                return;
            }
            if sender.send_data(send(event)).await.is_err() {
                return;
            }
        }
        loop {
            let remaining = until.map(|u| {
                Duration::from_nanos(
                    u64::try_from(u.saturating_sub(now())).unwrap_or(0),
                )
            });
            let next = match remaining {
                Some(left) if left.is_zero() => return,
                Some(left) => {
                    let timed = tokio::time::timeout(left, live.recv());
                    match unless_gone(&mut sender, timed).await {
                        Some(Ok(next)) => next,
                        _ => return,
                    }
                }
                None => match unless_gone(&mut sender, live.recv()).await {
                    Some(next) => next,
                    None => return,
                },
            };
            let event = match next {
                Ok(event) => event,
                // A reader too slow for the stream misses events, as
                // with Docker; it goes on with the next.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return;
                }
            };
            if until.is_some_and(|u| event.time_nano > u) {
                return;
            }
            if filter.matches(&event)
                && sender.send_data(send(&event)).await.is_err()
            {
                return;
            }
        }
    });
    Ok(respond(StatusCode::OK, body, "application/json"))
}

/// How often a response that waits (`wait`, `events`) checks that its
/// client is still there.
const PROBE: Duration = Duration::from_secs(5);

/// `done`, unless the client of `sender`'s body goes away first: `None`
/// then, so that the task waiting for it ends instead of waiting on for
/// an exit or an event that may never come. The check is an empty
/// frame, which hyper never writes, and which fails once the body is
/// gone.
async fn unless_gone<T>(
    sender: &mut http_body_util::channel::Sender<Bytes, std::io::Error>,
    done: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(done);
    let mut probe = tokio::time::interval(PROBE);
    probe.tick().await;
    loop {
        tokio::select! {
            value = &mut done => return Some(value),
            _ = probe.tick() => {
                if sender.send_data(Bytes::new()).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// A body whose frames a task sends.
pub fn channel_body()
-> (http_body_util::channel::Sender<Bytes, std::io::Error>, Body) {
    let (sender, body) =
        http_body_util::channel::Channel::<Bytes, std::io::Error>::new(16);
    (sender, body.boxed())
}

/// `POST /containers/ID/wait?condition=`: the headers at once, the body
/// (`{"StatusCode": N}`) when the condition holds.
fn wait(
    engine: Arc<Engine>,
    id: &str,
    condition: &str,
) -> Result<Response<Body>, Error> {
    let mut changes = match engine.watch(id) {
        Ok(changes) => changes,
        // Removed since its name was resolved: its exit code, if kept.
        Err(Error::NotFound(message)) => {
            return match engine.removed_exit(id) {
                Some(code) => Ok(json_response(
                    StatusCode::OK,
                    &json!({ "Error": null, "StatusCode": code }),
                )),
                None => Err(Error::NotFound(message)),
            };
        }
        Err(e) => return Err(e),
    };
    let start = *changes.borrow();
    let condition = match condition {
        "" | "not-running" => 0,
        "next-exit" => 1,
        "removed" => 2,
        other => {
            return Err(Error::BadRequest(format!(
                "invalid condition: {other:?}"
            )));
        }
    };
    let (mut sender, body) = channel_body();
    tokio::spawn(async move {
        let waited = async {
            changes
                .wait_for(|c| match condition {
                    0 => !c.running,
                    1 => c.exits > start.exits || c.removed,
                    _ => c.removed,
                })
                .await
                .map(|c| *c)
        };
        let Some(done) = unless_gone(&mut sender, waited).await else {
            return;
        };
        let code = match done {
            Ok(change) => change.code,
            // The container went away with its channel: removed.
            Err(_) => start.code,
        };
        let _ = sender
            .send_data(Bytes::from(format!(
                "{{\"Error\":null,\"StatusCode\":{code}}}\n"
            )))
            .await;
    });
    Ok(respond(StatusCode::OK, body, "application/json"))
}

/// `GET /containers/ID/logs`: the json-file records, filtered, framed
/// (or raw with a terminal); `follow` goes on while the container runs.
///
/// `follow` reads on every 100 ms ([`logs::Follower`], across
/// rotations); Docker waits on inotify instead.
async fn logs(
    engine: Arc<Engine>,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, Error> {
    let record = engine.record(id)?;
    let tty = record.config.tty == Some(true);
    let (stdout, stderr) = (flag(q, "stdout"), flag(q, "stderr"));
    if !stdout && !stderr {
        return Err(Error::BadRequest(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    let follow = flag(q, "follow");
    let timestamps = flag(q, "timestamps");
    let tail: Option<usize> = q.get("tail").and_then(|t| t.parse().ok());
    let since = q
        .get("since")
        .filter(|s| !s.is_empty() && *s != "0")
        .and_then(|s| crate::time::parse_rfc3339(s));
    let until = q
        .get("until")
        .filter(|s| !s.is_empty() && *s != "0")
        .and_then(|s| crate::time::parse_rfc3339(s));
    let dir = engine.config.data_root.join("containers").join(id);
    let (mut sender, body) = channel_body();
    let id = id.to_owned();
    let frame = move |entry: &logs::Entry| -> Option<Bytes> {
        let stream = match entry.stream.as_str() {
            "stdout" if stdout => Stream::Stdout,
            "stderr" if stderr => Stream::Stderr,
            _ => return None,
        };
        let at = crate::time::parse_rfc3339(&entry.time);
        if since.is_some_and(|s| at.is_some_and(|t| t < s))
            || until.is_some_and(|u| at.is_some_and(|t| t > u))
        {
            return None;
        }
        let mut payload = Vec::new();
        if timestamps {
            payload.extend_from_slice(entry.time.as_bytes());
            payload.push(b' ');
        }
        payload.extend_from_slice(entry.log.as_bytes());
        if tty {
            return Some(Bytes::from(payload));
        }
        let mut framed = frame_header(stream, payload.len() as u32).to_vec();
        framed.extend_from_slice(&payload);
        Some(Bytes::from(framed))
    };
    tokio::spawn(async move {
        let opened = blocking(move || logs::Follower::open(&dir)).await;
        let Ok(Ok((mut follower, backlog))) = opened else {
            return;
        };
        let first = tail.map_or(0, |n| backlog.len().saturating_sub(n));
        for entry in &backlog[first..] {
            if let Some(bytes) = frame(entry)
                && sender.send_data(bytes).await.is_err()
            {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            let running = engine
                .record(&id)
                .is_ok_and(|r| r.state.status.is_running());
            let polled = blocking(move || {
                let entries = follower.poll();
                (follower, entries)
            })
            .await;
            let Ok((back, Ok(entries))) = polled else {
                return;
            };
            follower = back;
            for entry in &entries {
                if let Some(bytes) = frame(entry)
                    && sender.send_data(bytes).await.is_err()
                {
                    return;
                }
            }
            // What it wrote before it stopped has been read: the end.
            if !running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(respond(StatusCode::OK, body, content_type))
}

/// Every value of `key` in the query string (`names=a&names=b`).
fn query_all(request: &Request<Incoming>, key: &str) -> Vec<String> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (decode(k) == key).then(|| decode(v))
        })
        .collect()
}

/// `GET /images/get`: the tar, streamed.
async fn export(
    engine: &Arc<Engine>,
    names: &[String],
) -> Result<Response<Body>, Error> {
    let (rx, failure) = images::save(engine, names).await?;
    Ok(respond(
        StatusCode::OK,
        receiver_body(rx, failure),
        "application/x-tar",
    ))
}

/// A body of the chunks a blocking writer sends. If the writer reports a
/// `failure` before its channel closes, the body ends in an error (the
/// connection closes without the chunked end), so that the client sees
/// a failed transfer, not a tar that merely stops at an entry's end.
fn receiver_body(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    mut failure: tokio::sync::oneshot::Receiver<String>,
) -> Body {
    let (mut sender, body) = channel_body();
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if sender.send_data(chunk).await.is_err() {
                return;
            }
        }
        if let Ok(message) = failure.try_recv() {
            sender.abort(std::io::Error::other(message));
        }
    });
    body
}

/// The request's body as a blocking reader, fed by a task. A body that
/// fails to arrive ends early: the reader's consumer sees a cut stream.
fn body_reader(request: Request<Incoming>) -> ChannelReader {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let mut body = request.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                return;
            }
        }
    });
    ChannelReader::new(rx)
}

/// `HEAD`, `GET`, `PUT /containers/ID/archive?path=P`: `docker cp`
/// ([`super::archive`]). The path's stat travels base64-encoded in
/// `X-Docker-Container-Path-Stat`; `GET` streams the tar as it is
/// written.
async fn archive(
    engine: Arc<Engine>,
    request: Request<Incoming>,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, Error> {
    use base64::Engine as _;
    if request.method() == Method::PUT {
        return put_archive(engine, body_reader(request), id, q).await;
    }
    let path = archive_path(q)?;
    let (record, rootfs) = engine.archive_root(id).await?;
    let name = record.name.clone();
    let stat = {
        let (rootfs, path, name) = (rootfs.clone(), path.clone(), name.clone());
        blocking(move || super::archive::stat(&rootfs, &path, &name)).await??
    };
    let header = base64::engine::general_purpose::STANDARD
        .encode(stat.to_string())
        .parse()
        .map_err(|e| Error::Internal(format!("stat header: {e}")))?;
    let body = if request.method() == Method::HEAD {
        full(Bytes::new())
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (failed, failure) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let writer = ChannelWriter { tx: tx.clone() };
            if let Err(e) = super::archive::get(&rootfs, &path, &name, writer) {
                let _ = failed.send(e.to_string());
            }
            // Only now may the body end: after the failure is told.
            drop(tx);
        });
        engine.container_event("archive-path", &record, &[]);
        receiver_body(rx, failure)
    };
    let mut response = respond(StatusCode::OK, body, "application/x-tar");
    response
        .headers_mut()
        .insert("X-Docker-Container-Path-Stat", header);
    Ok(response)
}

/// `PUT /containers/ID/archive?path=DIR`: the body, a tar, unpacked into
/// `DIR`. Whatever the outcome, what the client still sends is read (up
/// to [`DRAIN`]) before the answer: an answer given while it writes
/// reaches it as a broken pipe, not as the error it should read.
async fn put_archive(
    engine: Arc<Engine>,
    mut reader: ChannelReader,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, Error> {
    let checked = async {
        let path = archive_path(q)?;
        let (record, rootfs) = engine.archive_root(id).await?;
        if record.host_config.readonly_rootfs == Some(true) {
            return Err(Error::Forbidden(
                "container rootfs is marked read-only".into(),
            ));
        }
        Ok((path, record, rootfs))
    }
    .await;
    let outcome = blocking(move || {
        let put = checked.and_then(|(path, record, rootfs)| {
            super::archive::put(&rootfs, &path, &record.name, &mut reader)
                .map(|()| record)
        });
        drain(&mut reader);
        put
    })
    .await?;
    let record = outcome?;
    engine.container_event("extract-to-dir", &record, &[]);
    Ok(empty(StatusCode::OK))
}

/// The `path=` of an archive request.
fn archive_path(q: &HashMap<String, String>) -> Result<String, Error> {
    q.get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| Error::BadRequest("no path given".into()))
}

/// How much of a refused upload is read before the answer.
const DRAIN: u64 = 64 << 20;

/// Read what is left of an upload (at most [`DRAIN`]) and drop it, so
/// that the client, still writing, gets the answer that follows and not
/// a broken pipe.
pub fn drain(reader: &mut impl std::io::Read) {
    let mut rest = std::io::Read::take(reader, DRAIN);
    let _ = std::io::copy(&mut rest, &mut std::io::sink());
}

/// `POST /images/load`: the tar body to the archive loader, on a
/// blocking thread fed chunk by chunk.
async fn load(
    engine: Arc<Engine>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let mut reader = body_reader(request);
    let store_engine = engine.clone();
    let loader = tokio::task::spawn_blocking(move || {
        let loaded =
            crate::image::archive::load(&store_engine.store, &mut reader);
        drain(&mut reader);
        loaded
    });
    let loaded = loader
        .await
        .map_err(|e| Error::Internal(format!("load failed: {e}")))?
        .map_err(|e| Error::BadRequest(crate::child::error_chain(&e)))?;
    let mut lines = String::new();
    for image in loaded {
        let id = image.id.to_string();
        if image.names.is_empty() {
            images::event(&engine, "load", &id, &id);
            lines.push_str(
                &json!({ "stream": format!("Loaded image ID: {id}\n") })
                    .to_string(),
            );
            lines.push('\n');
        }
        for name in image.names {
            images::event(&engine, "load", &id, &name.familiar());
            lines.push_str(&json!({ "stream": format!("Loaded image: {}\n", name.familiar()) }).to_string());
            lines.push('\n');
        }
    }
    Ok(respond(StatusCode::OK, full(lines), "application/json"))
}

// ANCHOR: attach
/// `POST /containers/ID/attach`: answer `101 UPGRADED`, take the
/// connection over, and copy bytes both ways between it and the shim's
/// attach stream (already framed by the shim without a terminal). The
/// client's end of input half-closes the shim's side; the end of the
/// container's output closes the client's.
async fn attach(
    engine: Arc<Engine>,
    mut request: Request<Incoming>,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, Error> {
    let record = engine.record(id)?;
    let tty = record.config.tty == Some(true);
    let stream = engine
        .attach(id, flag(q, "stdin"), flag(q, "stdout"), flag(q, "stderr"))
        .await?;
    engine.container_event("attach", &record, &[]);
    Ok(hijack(&mut request, stream, tty))
}

/// Answer `101 UPGRADED` and, once hyper hands the connection over, copy
/// bytes both ways between it and `stream` (a shim's attach stream). The
/// client's end of input half-closes the shim's side; the end of the
/// process's output closes the client's.
fn hijack(
    request: &mut Request<Incoming>,
    stream: std::os::unix::net::UnixStream,
    tty: bool,
) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(shim) = tokio::net::UnixStream::from_std(stream) else {
            return;
        };
        let (mut shim_read, mut shim_write) = shim.into_split();
        let (mut client_read, mut client_write) =
            tokio::io::split(TokioIo::new(upgraded));
        let mut input = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            // Everything the client sends is read, to its end, even once
            // the shim no longer takes it: a socket closed with unread
            // bytes resets the connection, and the client would report
            // that instead of the exit.
            let mut buffer = vec![0u8; 16 * 1024];
            let mut shim_open = true;
            while let Ok(n) = client_read.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                if shim_open
                    && shim_write.write_all(&buffer[..n]).await.is_err()
                {
                    shim_open = false;
                }
            }
            let _ = shim_write.shutdown().await;
        });
        let _ = tokio::io::copy(&mut shim_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
        // The client closes its side once it has seen the end; one that
        // does not is cut off after a grace period.
        if tokio::time::timeout(Duration::from_secs(5), &mut input)
            .await
            .is_err()
        {
            input.abort();
        }
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut response = respond(
        StatusCode::SWITCHING_PROTOCOLS,
        full(Bytes::new()),
        content_type,
    );
    response.headers_mut().insert(
        CONNECTION,
        "Upgrade".parse().unwrap_or_else(|_| unreachable!()),
    );
    response
        .headers_mut()
        .insert(UPGRADE, "tcp".parse().unwrap_or_else(|_| unreachable!()));
    response
}
// ANCHOR_END: attach

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_split_off_and_compare() {
        assert_eq!(
            split_version("/v1.45/containers/json"),
            (Some("1.45"), "/containers/json")
        );
        assert_eq!(split_version("/_ping"), (None, "/_ping"));
        assert!(version_tuple("1.47") > version_tuple("1.45"));
        assert!(version_tuple("1.9") < version_tuple("1.24"));
    }

    #[test]
    fn queries_decode() {
        assert_eq!(decode("a%2Fb+c%zz%"), "a/b c%zz%");
        assert_eq!(decode("%7B%22name%22%3A%7B%7D%7D"), "{\"name\":{}}");
    }

    #[test]
    fn durations_read_as_docker_prints_them() {
        let d = Duration::from_secs;
        assert_eq!(human_duration(d(0)), "Less than a second");
        assert_eq!(human_duration(d(5)), "5 seconds");
        assert_eq!(human_duration(d(90)), "About a minute");
        assert_eq!(human_duration(d(3 * 3600)), "3 hours");
        assert_eq!(human_duration(d(3 * 86400)), "3 days");
    }
}
