//! HTTP to a registry: hyper's client, TLS by rustls with the system's
//! roots, and what the distribution spec adds on top — the auth flow, a
//! bound on every body read into memory, redirects followed a bounded
//! number of times, and a trace of each request.
//!
//! ```text
//!   request ──► 401 + WWW-Authenticate: Bearer realm=R,service=S
//!                 └─► GET R?service=S&scope=repository:NAME:pull  (Basic
//!                     user:password if the user logged in) ─► {"token"}
//!           ──► the same request, Authorization: Bearer TOKEN ─► 200
//!           (a second 401 is the answer: no loop)
//! ```

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Error;
use super::auth::{Challenge, Credentials, TokenResponse};

/// A request's body (empty, bytes, or a blob streamed from the store).
pub type Body = BoxBody<Bytes, std::io::Error>;

/// How many redirects a request follows.
pub const MAX_REDIRECTS: usize = 10;

/// The biggest token server answer read.
pub const MAX_TOKEN: u64 = 1 << 20;

/// How long a connection may take.
pub const CONNECT_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(30);

/// How long an answer's head, or a small body (a manifest, a token, an
/// error), may take.
pub const ANSWER_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(60);

/// The most of an error body read (for its message).
const MAX_ERROR: u64 = 64 << 10;

/// Where each request goes, one line each, when tracing.
pub type Trace = Arc<dyn Fn(&str) + Send + Sync>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of `bytes`.
pub fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

/// The client of every registry: connections are pooled per host.
pub struct Client {
    http: Hyper<HttpsConnector<HttpConnector>, Body>,
    insecure: Vec<String>,
    trace: Option<Trace>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("insecure", &self.insecure)
            .field("trace", &self.trace.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client that speaks plain HTTP to loopback registries and to
    /// `insecure` ones (`host` or `host:port`, as `--insecure-registry`
    /// names them), and TLS to every other; `trace` sees each request.
    pub fn new(insecure: Vec<String>, trace: Option<Trace>) -> Client {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        // No roots on this machine: TLS fails at the first handshake,
        // with the reason, and plain HTTP still works.
        let builder = match builder.with_native_roots() {
            Ok(builder) => builder,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector =
            builder.https_or_http().enable_http1().wrap_connector(http);
        Client {
            http: Hyper::builder(TokioExecutor::new()).build(connector),
            insecure,
            trace,
        }
    }

    /// Whether `host` (`name[:port]`) may be spoken to in plain HTTP:
    /// loopback (`localhost`, `127.0.0.0/8`, `[::1]`), as Docker allows,
    /// or listed insecure.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name);
        is_loopback(host)
            || self
                .insecure
                .iter()
                .any(|listed| listed == host || listed == name)
    }

    /// The base URL of registry `domain`: `docker.io` is served at
    /// `registry-1.docker.io`.
    pub fn base(&self, domain: &str) -> String {
        let host = if domain == crate::image::reference::DEFAULT_DOMAIN {
            "registry-1.docker.io"
        } else {
            domain
        };
        let scheme = if self.is_insecure(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}")
    }

    /// A session with registry `domain` for `scopes`
    /// (`repository:NAME:pull`, …), as `credentials` (empty: anonymous).
    pub fn session(
        self: &Arc<Client>,
        domain: &str,
        scopes: Vec<String>,
        credentials: Credentials,
    ) -> Session {
        Session {
            base: self.base(domain),
            client: self.clone(),
            domain: domain.to_owned(),
            scopes,
            credentials,
            authorization: tokio::sync::Mutex::new(None),
        }
    }

    /// One request, traced.
    async fn raw(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, Error> {
        let method = request.method().to_string();
        let url = request.uri().to_string();
        let outcome =
            tokio::time::timeout(ANSWER_TIMEOUT, self.http.request(request))
                .await;
        let failure = match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(crate::child::error_chain(&e)),
            Err(_) => {
                Err(format!("no answer in {} s", ANSWER_TIMEOUT.as_secs()))
            }
        };
        let response = failure.map_err(|message| {
            let error = Error::Connect {
                method: method.clone(),
                url: url.clone(),
                message,
            };
            self.note(format_args!("{method} {url} → {error}"));
            error
        })?;
        if self.trace.is_some() {
            let headers = response.headers();
            let mut line =
                format!("{method} {url} → {}", response.status().as_u16());
            if let Some(kind) = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
            {
                line.push_str(&format!(" {kind}"));
            }
            if let Some(length) = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
            {
                line.push_str(&format!(" ({length} bytes)"));
            }
            self.note(format_args!("{line}"));
        }
        Ok(response)
    }

    fn note(&self, line: std::fmt::Arguments<'_>) {
        if let Some(trace) = &self.trace {
            trace(&line.to_string());
        }
    }

    /// Where a redirect from `from` to `location` leads: absolute, or
    /// resolved against `from`. A redirect from HTTPS to plain HTTP is
    /// refused unless the new host may be spoken to so.
    fn resolve(&self, from: &str, location: &str) -> Result<String, Error> {
        let protocol = |why: String| Error::Protocol {
            url: from.to_owned(),
            why,
        };
        let base: Uri = from.parse().map_err(|e| protocol(format!("{e}")))?;
        let target = if location.starts_with("http://")
            || location.starts_with("https://")
        {
            location.to_owned()
        } else if location.starts_with('/') {
            format!(
                "{}://{}{location}",
                base.scheme_str().unwrap_or("https"),
                base.authority().map(|a| a.as_str()).unwrap_or_default()
            )
        } else {
            let path = base.path();
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!(
                "{}://{}{dir}{location}",
                base.scheme_str().unwrap_or("https"),
                base.authority().map(|a| a.as_str()).unwrap_or_default()
            )
        };
        let uri: Uri = target
            .parse()
            .map_err(|e| protocol(format!("bad Location {location:?}: {e}")))?;
        let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let from_host =
            base.authority().map(|a| a.as_str()).unwrap_or_default();
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(protocol(format!(
                "refused a Location of another scheme ({target})"
            )));
        }
        if uri.scheme_str() == Some("http")
            && base.scheme_str() == Some("https")
            && !self.is_insecure(host)
        {
            return Err(protocol(format!(
                "refused a redirect from HTTPS to plain HTTP ({target})"
            )));
        }
        // A registry out there must not turn the daemon on this machine's
        // own services.
        if is_loopback(host) && !is_loopback(from_host) {
            return Err(protocol(format!(
                "refused a redirect to loopback from another host ({target})"
            )));
        }
        Ok(target)
    }
}

/// Whether `host` (`name[:port]`) is this machine: `localhost`,
/// `127.0.0.0/8`, `[::1]`.
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => host,
    };
    name == "localhost"
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://authority` of `url`.
fn origin(url: &str) -> String {
    url.parse::<Uri>()
        .map(|u| {
            format!(
                "{}://{}",
                u.scheme_str().unwrap_or_default(),
                u.authority().map(|a| a.as_str()).unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

/// Percent-encode a query value (all but RFC 3986's unreserved bytes).
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Talking to one registry for some repositories, with one set of
/// credentials: the token it earns is reused by every request.
pub struct Session {
    client: Arc<Client>,
    /// The registry, as references name it.
    pub domain: String,
    base: String,
    scopes: Vec<String>,
    credentials: Credentials,
    authorization: tokio::sync::Mutex<Option<String>>,
}

impl Session {
    /// `BASE/v2/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// Where `location`, in an answer to `from`, leads (the rules of a
    /// redirect: [`Client`]'s `resolve`).
    pub fn resolve(&self, from: &str, location: &str) -> Result<String, Error> {
        self.client.resolve(from, location)
    }

    // ANCHOR: send
    /// Send a request, `body` made anew for each attempt: redirects
    /// followed (GET and HEAD; at most [`MAX_REDIRECTS`], credentials
    /// only ever sent to the registry itself), and one 401 answered by
    /// authenticating as the challenge asks. What comes back may still
    /// be an error status: see [`check`](Session::check).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: &(dyn Fn() -> Body + Send + Sync),
    ) -> Result<Response<Incoming>, Error> {
        let mut target = url.to_owned();
        let mut redirects = 0;
        let mut authenticated = false;
        let follows = method == Method::GET || method == Method::HEAD;
        loop {
            let ours = origin(&target) == origin(&self.base);
            let mut builder =
                Request::builder().method(method.clone()).uri(&target);
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            if ours
                && let Some(authorization) =
                    self.authorization.lock().await.clone()
            {
                builder = builder.header(header::AUTHORIZATION, authorization);
            }
            let request =
                builder.body(body()).map_err(|e| Error::Protocol {
                    url: target.clone(),
                    why: e.to_string(),
                })?;
            let response = self.client.raw(request).await?;
            let status = response.status();
            if follows
                && status.is_redirection()
                && status != StatusCode::NOT_MODIFIED
            {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(Error::Redirects {
                        url: url.to_owned(),
                    });
                }
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Error::Protocol {
                        url: target.clone(),
                        why: format!("a {status} without a Location"),
                    })?
                    .to_owned();
                target = self.client.resolve(&target, &location)?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && ours && !authenticated {
                authenticated = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                if let Some(challenge) = challenge {
                    self.authorize(&target, challenge).await?;
                    continue;
                }
            }
            return Ok(response);
        }
    }
    // ANCHOR_END: send

    /// A GET or HEAD without a body.
    pub async fn get(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
    ) -> Result<Response<Incoming>, Error> {
        self.send(method, url, headers, &empty).await
    }

    /// Earn the `Authorization` the challenge asks for.
    async fn authorize(
        &self,
        url: &str,
        challenge: Challenge,
    ) -> Result<(), Error> {
        let value = match challenge {
            Challenge::Basic => {
                if self.credentials.is_empty() {
                    return Err(Error::Unauthorized {
                        url: url.to_owned(),
                        message: "no basic auth credentials".into(),
                    });
                }
                self.credentials.basic()
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut scopes = self.scopes.clone();
                scopes.extend(
                    scope.into_iter().filter(|s| !self.scopes.contains(s)),
                );
                format!(
                    "Bearer {}",
                    self.token(&realm, service.as_deref(), &scopes).await?
                )
            }
        };
        *self.authorization.lock().await = Some(value);
        Ok(())
    }

    /// A token from the token server at `realm` (distribution's
    /// `token.md`; with a refresh token, `oauth.md`'s POST).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, Error> {
        let uri: Uri = realm.parse().map_err(|e| Error::Protocol {
            url: realm.to_owned(),
            why: format!("the token realm is not a URL: {e}"),
        })?;
        let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.client.is_insecure(host) => {}
            _ => {
                return Err(Error::Protocol {
                    url: realm.to_owned(),
                    why: "a token realm must be HTTPS (or a registry allowed plain HTTP)".into(),
                });
            }
        }
        let mut query: Vec<String> = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", encode(service)));
        }
        for scope in scopes {
            query.push(format!("scope={}", encode(scope)));
        }
        let credentials = &self.credentials;
        let request = if credentials.identity_token.is_empty() {
            if !credentials.username.is_empty() {
                query
                    .push(format!("account={}", encode(&credentials.username)));
            }
            let separator = if realm.contains('?') { '&' } else { '?' };
            let url = if query.is_empty() {
                realm.to_owned()
            } else {
                format!("{realm}{separator}{}", query.join("&"))
            };
            let mut builder = Request::get(url);
            if !credentials.is_empty() {
                builder =
                    builder.header(header::AUTHORIZATION, credentials.basic());
            }
            builder.body(empty())
        } else {
            query.push("grant_type=refresh_token".into());
            query.push(format!(
                "refresh_token={}",
                encode(&credentials.identity_token)
            ));
            query.push("client_id=berth".into());
            Request::post(realm)
                .header(
                    header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(full(Bytes::from(query.join("&"))))
        };
        let request = request.map_err(|e| Error::Protocol {
            url: realm.to_owned(),
            why: e.to_string(),
        })?;
        let response = self.client.raw(request).await?;
        let status = response.status();
        let body = read_bounded(response, MAX_TOKEN, realm).await?;
        if !status.is_success() {
            return Err(Error::Unauthorized {
                url: realm.to_owned(),
                message: token_error(status, &body),
            });
        }
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| Error::Protocol {
                url: realm.to_owned(),
                why: "the token server's answer holds no token".into(),
            })
    }

    /// `response` if its status is a success; else the registry's
    /// errors, Docker's way, under `context`.
    pub async fn check(
        &self,
        response: Response<Incoming>,
        context: impl FnOnce() -> String,
    ) -> Result<Response<Incoming>, Error> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_bounded(response, MAX_ERROR, "")
            .await
            .unwrap_or_default();
        Err(Error::Registry {
            context: context(),
            status: status.as_u16(),
            message: registry_message(status, &body),
        })
    }
}

/// Read `response`'s body into memory, at most `limit` bytes.
pub async fn read_bounded(
    response: Response<Incoming>,
    limit: u64,
    url: &str,
) -> Result<Bytes, Error> {
    let too_big = || Error::TooBig {
        url: url.to_owned(),
        limit,
    };
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_big());
    }
    let limited = Limited::new(
        response.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    let Ok(collected) =
        tokio::time::timeout(ANSWER_TIMEOUT, limited.collect()).await
    else {
        return Err(Error::Connect {
            method: "GET".into(),
            url: url.to_owned(),
            message: format!(
                "the answer took more than {} s",
                ANSWER_TIMEOUT.as_secs()
            ),
        });
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_big()),
        Err(e) => Err(Error::Connect {
            method: "GET".into(),
            url: url.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// The distribution spec's error body (`{"errors": [{"code", "message"}]}`)
/// as Docker prints it: the code in lower case, words apart, then the
/// message (`manifest unknown: manifest unknown`). Anything else: the
/// status and the body's first line.
pub fn registry_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<One>,
    }
    #[derive(serde::Deserialize)]
    struct One {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body)
        && !parsed.errors.is_empty()
    {
        let lines: Vec<String> = parsed
            .errors
            .iter()
            .map(|e| {
                let code = e.code.to_lowercase().replace('_', " ");
                match (code.is_empty(), e.message.is_empty()) {
                    (true, _) => e.message.clone(),
                    (false, true) => code,
                    (false, false) => format!("{code}: {}", e.message),
                }
            })
            .collect();
        return printable(&lines.join("; "));
    }
    let text = String::from_utf8_lossy(body);
    let first = text.lines().next().unwrap_or("").trim();
    // A HEAD's answer has no body: the status says it, as Docker words it.
    if first.is_empty() {
        match status {
            StatusCode::UNAUTHORIZED => {
                return "unauthorized: authentication required".into();
            }
            StatusCode::FORBIDDEN => {
                return "denied: requested access to the resource is denied"
                    .into();
            }
            _ => {}
        }
    }
    let reason = status.canonical_reason().unwrap_or("");
    if first.is_empty() {
        format!("unexpected status {} {reason}", status.as_u16())
    } else {
        format!(
            "unexpected status {} {reason}: {}",
            status.as_u16(),
            printable(first)
        )
    }
}

/// What a registry wrote, safe for a terminal and one line: control
/// characters (an escape sequence) as `?`, at most [`MAX_MESSAGE`]
/// characters.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_MESSAGE)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// The longest registry message passed on.
const MAX_MESSAGE: usize = 400;

/// A token server's refusal: its `details` (Docker Hub), `error` and
/// `error_description` (OAuth 2), or distribution's errors.
fn token_error(status: StatusCode, body: &[u8]) -> String {
    let value: serde_json::Value =
        serde_json::from_slice(body).unwrap_or_default();
    for key in ["details", "error_description", "error"] {
        if let Some(text) = value.get(key).and_then(|v| v.as_str()) {
            return printable(text);
        }
    }
    registry_message(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_read_as_docker_prints_them() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_message(StatusCode::NOT_FOUND, body),
            "manifest unknown: manifest unknown"
        );
        assert_eq!(
            registry_message(StatusCode::BAD_GATEWAY, b"<html>oops\n</html>"),
            "unexpected status 502 Bad Gateway: <html>oops"
        );
    }

    #[test]
    fn registry_text_cannot_reach_a_terminal_raw() {
        let body = r#"{"errors":[{"code":"DENIED","message":"\u001b]0;owned\u0007x"}]}"#;
        let message = registry_message(StatusCode::FORBIDDEN, body.as_bytes());
        assert_eq!(message, "denied: ?]0;owned?x");
        let long = "e".repeat(10_000);
        assert!(
            registry_message(StatusCode::BAD_GATEWAY, long.as_bytes())
                .chars()
                .count()
                < 500
        );
    }

    #[test]
    fn only_loopback_and_listed_registries_speak_plain_http() {
        let client = Client::new(vec!["reg.internal:5000".into()], None);
        for host in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
            "reg.internal:5000",
        ] {
            assert!(client.is_insecure(host), "{host}");
        }
        for host in [
            "reg.internal:5001",
            "example.com",
            "128.0.0.1",
            "localhost.example.com",
        ] {
            assert!(!client.is_insecure(host), "{host}");
        }
        assert_eq!(client.base("docker.io"), "https://registry-1.docker.io");
        assert!(
            client
                .resolve("https://example.com/v2/x", "http://evil.example/x")
                .is_err()
        );
        assert_eq!(
            client
                .resolve("http://127.0.0.1:5000/v2/a/blobs/x", "/other")
                .unwrap(),
            "http://127.0.0.1:5000/other"
        );
        // A registry out there cannot point the daemon at this machine.
        for evil in ["https://127.0.0.1:2375/", "https://localhost/x"] {
            assert!(client.resolve("https://example.com/v2/", evil).is_err());
        }
        // Anything else is a path on the same host.
        assert_eq!(
            client
                .resolve("https://example.com/v2/", "file:///x")
                .unwrap(),
            "https://example.com/v2/file:///x"
        );
    }
}
