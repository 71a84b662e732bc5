//! The registry endpoints of the Engine API: `POST /images/create?fromImage=`
//! (pull), `POST /images/NAME/push`, `POST /auth` (login). Pull and push
//! answer with a stream of Docker's JSON progress messages
//! ([`crate::registry::progress`]); one that fails before its first
//! message answers with an HTTP error instead, as dockerd does, so that
//! `docker pull` of a name that is not there reads like Docker's.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::containers::{Engine, Error, blocking};
use super::http::Body;
use super::images;
use crate::image::reference::{Reference, Version};
use crate::registry::auth::{AuthConfig, Credentials};
use crate::registry::manifest::Platform;
use crate::registry::progress::Progress;
use crate::registry::{self, pull, push};

/// A registry failure as the API answers it.
fn api_error(error: &registry::Error, pulling: bool) -> Error {
    let message = crate::child::error_chain(error);
    if error.is_not_found() || (pulling && error.is_denied()) {
        Error::NotFound(message)
    } else if error.is_denied() {
        Error::Unauthorized(message)
    } else if matches!(error, registry::Error::Manifest { .. }) {
        Error::NotFound(message)
    } else {
        Error::Internal(message)
    }
}

/// The reference `fromImage` and `tag` make (a tag that is a digest
/// pins it: the docker CLI sends `repo` and `sha256:…` so).
pub fn pull_reference(from_image: &str, tag: &str) -> Result<Reference, Error> {
    if tag.starts_with("sha256:") {
        return format!("{from_image}@{tag}").parse().map_err(
            |e: crate::image::reference::BadReference| {
                Error::BadRequest(e.to_string())
            },
        );
    }
    images::reference_of(from_image, tag)
}

/// Run `work`, which reports to the [`Progress`] it is given, and
/// answer with its messages as they come (its failure the last line);
/// an HTTP error if it fails before saying anything.
pub async fn stream<F, Fut>(work: F) -> Result<Response<Body>, Error>
where
    F: FnOnce(Progress) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let future = work(Progress::new(tx));
    tokio::spawn(async move {
        let _ = done_tx.send(future.await);
    });
    let Some(first) = rx.recv().await else {
        return match done_rx.await {
            Ok(Ok(())) => Ok(super::http::respond(
                StatusCode::OK,
                super::http::full(Bytes::new()),
                "application/json",
            )),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Internal("the transfer task failed".into())),
        };
    };
    let (mut sender, body) = super::http::channel_body();
    tokio::spawn(async move {
        let line = |value: &Value| Bytes::from(format!("{value}\n"));
        if sender.send_data(line(&first)).await.is_err() {
            return;
        }
        while let Some(value) = rx.recv().await {
            if sender.send_data(line(&value)).await.is_err() {
                return;
            }
        }
        if let Ok(Err(error)) = done_rx.await {
            let message = error.to_string();
            let value = json!({ "errorDetail": { "message": message }, "error": message });
            let _ = sender.send_data(line(&value)).await;
        }
    });
    Ok(super::http::respond(
        StatusCode::OK,
        body,
        "application/json",
    ))
}

/// `POST /images/create?fromImage=NAME&tag=TAG&platform=P`, with the
/// credentials of `X-Registry-Auth`.
pub async fn pull(
    engine: &Arc<Engine>,
    q: &HashMap<String, String>,
    credentials: Credentials,
) -> Result<Response<Body>, Error> {
    let from_image = q.get("fromImage").cloned().unwrap_or_default();
    let reference =
        pull_reference(&from_image, q.get("tag").map_or("", String::as_str))?;
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(text) => text.parse::<Platform>().map_err(Error::BadRequest)?,
        None => Platform::host(),
    };
    let engine = engine.clone();
    stream(move |progress| async move {
        let transfer = engine.transfers.read().await;
        let pulled = pull::pull(
            &engine.registry,
            &engine.store,
            &engine.snapshots,
            &reference,
            &platform,
            credentials,
            &progress,
        )
        .await;
        drop(transfer);
        // What a failed pull brought goes with the next collection,
        // once no other transfer runs (it may share the blobs).
        if pulled.is_err() {
            engine.gc_pending.store(true, Ordering::SeqCst);
        }
        let collecting = engine.clone();
        let _ = blocking(move || collecting.after_transfer()).await;
        let pulled = pulled.map_err(|e| api_error(&e, true))?;
        images::event(
            &engine,
            "pull",
            &pulled.id.to_string(),
            &reference.familiar(),
        );
        Ok(())
    })
    .await
}

/// `POST /images/NAME/push?tag=TAG`: that tag, or every tag of the
/// repository when none is given.
pub async fn push(
    engine: &Arc<Engine>,
    name: &str,
    tag: &str,
    credentials: Credentials,
) -> Result<Response<Body>, Error> {
    let repository = images::reference_of(name, "")?;
    let wanted = (!tag.is_empty())
        .then(|| images::reference_of(name, tag))
        .transpose()?;
    let store = engine.store.clone();
    let names = blocking(move || store.names())
        .await?
        .map_err(|e| Error::Internal(e.to_string()))?;
    let targets: Vec<(Reference, crate::image::digest::Digest)> = names
        .into_iter()
        .filter(|(n, _)| match &wanted {
            Some(wanted) => n == wanted,
            None => {
                n.domain == repository.domain
                    && n.path == repository.path
                    && matches!(n.version, Version::Tag(_))
            }
        })
        .filter_map(|(n, d)| {
            Some((n, crate::image::store::our_digest(d.digest())?))
        })
        .collect();
    if targets.is_empty() {
        return Err(Error::NotFound(format!(
            "An image does not exist locally with the tag: {}",
            wanted.as_ref().unwrap_or(&repository).familiar_repository()
        )));
    }
    let engine = engine.clone();
    stream(move |progress| async move {
        for (target, manifest) in targets {
            push::push(
                &engine.registry,
                &engine.store,
                &manifest,
                &target,
                credentials.clone(),
                push::CHUNK,
                &progress,
            )
            .await
            .map_err(|e| api_error(&e, false))?;
            images::event(
                &engine,
                "push",
                &manifest.to_string(),
                &target.familiar(),
            );
        }
        Ok(())
    })
    .await
}

/// The registry a login's `serveraddress` names: `host[:port]`, Docker
/// Hub's many names as `docker.io`.
pub fn server_domain(address: &str) -> String {
    let host = address
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or_default();
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => {
            crate::image::reference::DEFAULT_DOMAIN.to_owned()
        }
        host => host.to_owned(),
    }
}

/// `POST /auth`: check the credentials against the registry (`GET
/// /v2/`, through whatever challenge it makes); Docker's answer if they
/// work, 401 if not. The daemon keeps nothing: the client stores them.
pub async fn login(
    engine: &Arc<Engine>,
    config: AuthConfig,
) -> Result<Value, Error> {
    let credentials = config.credentials();
    if credentials.is_empty() {
        return Err(Error::BadRequest("no username given".into()));
    }
    let domain = server_domain(&config.server_address);
    let session = engine.registry.session(&domain, Vec::new(), credentials);
    let url = session.url("");
    let failed = |error: registry::Error| match error {
        e @ (registry::Error::Unauthorized { .. }
        | registry::Error::Registry { .. }) => {
            Error::Unauthorized(crate::child::error_chain(&e))
        }
        e => Error::Internal(crate::child::error_chain(&e)),
    };
    let response = session.get(Method::GET, &url, &[]).await.map_err(failed)?;
    session
        .check(response, || format!("login attempt to {url} failed"))
        .await
        .map_err(failed)?;
    Ok(json!({ "Status": "Login Succeeded", "IdentityToken": "" }))
}
