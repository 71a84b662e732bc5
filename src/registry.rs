//! Registries for the registry tests, all on 127.0.0.1: Debian's
//! `docker-registry` (distribution) started on a port and directory of
//! its own, optionally behind a token server written here (its own RSA
//! key, tokens signed with `openssl`), and a fake registry that answers
//! what a test tells it to — to lie.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// A port free on 127.0.0.1 now (the kernel's choice; the race until the
/// server binds it is a test's to lose, never the host's).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something answers on `port`.
fn wait_listening(port: u16, what: &str, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}: {}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `docker-registry` on 127.0.0.1, its storage under
/// `target/test-registry/NAME`; stopped and removed when dropped.
pub struct Registry {
    dir: PathBuf,
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    _token: Option<TokenServer>,
}

impl Registry {
    /// Start one, open to all.
    pub fn start(name: &str) -> Registry {
        Registry::start_with(name, None)
    }

    /// Start one whose access `token` grants (distribution's `auth:
    /// token`).
    pub fn start_with(name: &str, token: Option<TokenServer>) -> Registry {
        let dir = crate::workspace_root()
            .join("target/test-registry")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some(token) = &token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    \
                 issuer: {ISSUER}\n    rootcertbundle: {}\n",
                token.port,
                token.cert.display()
            ));
        }
        fs::write(dir.join("config.yml"), config).unwrap();
        let log = dir.join("log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("cannot start docker-registry (scripts/setup installs it)");
        wait_listening(port, "docker-registry", &log);
        Registry {
            dir,
            child,
            host: format!("127.0.0.1:{port}"),
            _token: token,
        }
    }

    /// What it logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The registry's name for itself in tokens.
const SERVICE: &str = "berth-test-registry";
/// The token server's name in tokens.
const ISSUER: &str = "berth-test-issuer";

/// Who may do what: a user (`""`: anonymous), a repository prefix, the
/// actions granted there.
pub type Grant = (&'static str, &'static str, &'static [&'static str]);

/// A token server (distribution's `token.md`) on 127.0.0.1: users and
/// passwords, grants per repository prefix; each token an RS256 JWT
/// carrying its certificate (`x5c`), which the registry trusts.
pub struct TokenServer {
    port: u16,
    cert: PathBuf,
    dir: PathBuf,
    /// Every request it served (path and query).
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    /// Start one for `users` (name, password) and `grants`.
    pub fn start(
        name: &str,
        users: &[(&'static str, &'static str)],
        grants: &'static [Grant],
    ) -> TokenServer {
        let dir = crate::workspace_root()
            .join("target/test-registry")
            .join(format!("{name}-token"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .arg("-subj")
            .arg("/CN=berth-test-token")
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl req failed");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let users: HashMap<String, String> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let request = match read_request(&stream) {
                    Some(r) => r,
                    None => continue,
                };
                seen.lock().unwrap().push(request.path.clone());
                let user = request
                    .headers
                    .get("authorization")
                    .and_then(|v| v.strip_prefix("Basic "))
                    .and_then(|v| {
                        base64::engine::general_purpose::STANDARD.decode(v).ok()
                    })
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|pair| {
                        let (user, password) = pair.split_once(':')?;
                        Some((user.to_owned(), password.to_owned()))
                    });
                let user = match user {
                    None => String::new(),
                    Some((user, password))
                        if users.get(&user) == Some(&password) =>
                    {
                        user
                    }
                    Some(_) => {
                        respond(
                            stream,
                            401,
                            &[("Content-Type", "application/json")],
                            br#"{"details":"incorrect username or password"}"#,
                        );
                        continue;
                    }
                };
                let token = sign(
                    &key,
                    &x5c,
                    &user,
                    &request.query_all("scope"),
                    grants,
                );
                let body =
                    serde_json::json!({ "token": token, "expires_in": 300 })
                        .to_string();
                respond(
                    stream,
                    200,
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                );
            }
        });
        TokenServer {
            port,
            cert,
            dir,
            requests,
        }
    }
}

impl TokenServer {
    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A JWT for `user` granting, of the `scopes` asked, what `grants`
/// allows.
fn sign(
    key: &Path,
    x5c: &str,
    user: &str,
    scopes: &[String],
    grants: &[Grant],
) -> String {
    let b64 = |bytes: &[u8]| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let mut access = Vec::new();
    for scope in scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let allowed: Vec<&str> = actions
            .split(',')
            .filter(|action| {
                grants.iter().any(|(who, prefix, can)| {
                    *who == user
                        && name.starts_with(prefix)
                        && can.contains(action)
                })
            })
            .collect();
        access.push(serde_json::json!({ "type": "repository", "name": name, "actions": allowed }));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header =
        serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [x5c] });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", scopes.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let signature = openssl.wait_with_output().unwrap().stdout;
    format!("{signing_input}.{}", b64(&signature))
}

/// A request as the fake servers see it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: HashMap<String, String>,
}

impl Request {
    /// Every value of query parameter `name`, decoded.
    pub fn query_all(&self, name: &str) -> Vec<String> {
        let query = self.path.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
            .collect()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read one request's head (bodies are not read: the fakes serve GETs).
fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty()
        {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

/// Write a whole response and close.
fn respond(
    mut stream: TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// What the fake registry answers.
pub struct Answer {
    /// The status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Claim this `Content-Length` instead of the body's (a truncated
    /// answer: the connection closes after the body).
    pub length: Option<usize>,
    /// Send the body in pieces of this size, this long apart.
    pub trickle: Option<(usize, Duration)>,
}

impl Answer {
    /// `status` with `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
            length: None,
            trickle: None,
        }
    }

    /// With a header.
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A registry on 127.0.0.1 that answers each request with what its
/// handler returns; counts the requests.
pub struct FakeRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Every request (method and path), in order.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    /// Serve with `handler`.
    pub fn start(
        handler: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = handler.clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let Some(request) = read_request(&stream) else {
                        return;
                    };
                    seen.lock()
                        .unwrap()
                        .push(format!("{} {}", request.method, request.path));
                    let answer = handler(&request);
                    serve(stream, &request, answer);
                });
            }
        });
        FakeRegistry { host, requests }
    }

    /// How many requests had `needle` in their method and path.
    pub fn count(&self, needle: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains(needle))
            .count()
    }
}

fn serve(mut stream: TcpStream, request: &Request, answer: Answer) {
    let length = answer.length.unwrap_or(answer.body.len());
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {length}\r\nConnection: close\r\n",
        answer.status
    );
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || request.method == "HEAD" {
        return;
    }
    match answer.trickle {
        None => {
            let _ = stream.write_all(&answer.body);
        }
        Some((size, pause)) => {
            for piece in answer.body.chunks(size) {
                if stream.write_all(piece).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
        }
    }
    let _ = stream.flush();
    // Read what the client may still send, so that the close is a FIN.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.read(&mut [0u8; 64]);
}

/// The OCI index media type.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image as a test builds it: blobs by digest, and the manifests and
/// index that name them.
#[derive(Default, Clone)]
pub struct Blobs {
    /// Every blob, by `sha256:HEX`.
    pub blobs: HashMap<String, Vec<u8>>,
}

impl Blobs {
    /// Add `bytes`; its digest.
    pub fn add(&mut self, bytes: Vec<u8>) -> String {
        let digest = crate::daemons::digest(&bytes);
        self.blobs.insert(digest.clone(), bytes);
        digest
    }

    /// Add an image of `layers` (blob, media type, diff ID) for
    /// `architecture`, with `Cmd ["sh"]`: its manifest's digest and size.
    pub fn image(
        &mut self,
        architecture: &str,
        layers: &[(Vec<u8>, &str, String)],
    ) -> (String, usize) {
        let diff_ids: Vec<&String> = layers.iter().map(|(_, _, d)| d).collect();
        let config = serde_json::json!({
            "architecture": architecture, "os": "linux",
            "config": {"Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes();
        let config_size = config.len();
        let config_digest = self.add(config);
        let mut descriptors = Vec::new();
        for (blob, media_type, _) in layers {
            descriptors.push(serde_json::json!({
                "mediaType": media_type, "digest": self.add(blob.clone()), "size": blob.len(),
            }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": descriptors,
        })
        .to_string()
        .into_bytes();
        let size = manifest.len();
        (self.add(manifest), size)
    }

    /// Add an OCI index of `manifests` (digest and size, architecture,
    /// variant), all `linux`: its digest and size.
    pub fn index(
        &mut self,
        manifests: &[((String, usize), &str, Option<&str>)],
    ) -> (String, usize) {
        let entries: Vec<serde_json::Value> = manifests
            .iter()
            .map(|((digest, size), arch, variant)| {
                let mut platform =
                    serde_json::json!({"os": "linux", "architecture": arch});
                if let Some(variant) = variant {
                    platform["variant"] = (*variant).into();
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest, "size": size, "platform": platform,
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": entries,
        })
        .to_string()
        .into_bytes();
        let size = index.len();
        (self.add(index), size)
    }

    /// Write an OCI image layout at `dir`: the blobs, and `index.json`
    /// naming `top` (a manifest or an index) as `tag`.
    pub fn layout(&self, dir: &Path, top: (&str, usize, &str), tag: &str) {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        for (digest, bytes) in &self.blobs {
            fs::write(
                dir.join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
                bytes,
            )
            .unwrap();
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": top.2, "digest": top.0, "size": top.1,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        fs::write(dir.join("index.json"), index.to_string()).unwrap();
    }
}

/// `skopeo ARGS` (plain HTTP to loopback): its output, asserted to
/// succeed.
pub fn skopeo(args: &[&str]) -> String {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (scripts/setup installs it)");
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The digest skopeo reads for `reference` (`127.0.0.1:PORT/REPO:TAG`).
pub fn remote_digest(reference: &str) -> String {
    let text = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    crate::daemons::digest(text.as_bytes())
}
