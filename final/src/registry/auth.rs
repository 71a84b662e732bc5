//! Who the client is to a registry: the challenge a registry answers
//! with (`WWW-Authenticate`, RFC 7235), the credentials a user gave
//! (`X-Registry-Auth` from the docker CLI, Docker's `config.json` for
//! `berth login`), and the token server's answer (distribution's
//! `token.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::path_io;

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` for `service` (and `scope`, if the
    /// registry names one).
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The registry's name for itself, passed back to the server.
        service: Option<String>,
        /// The scope the registry asks for.
        scope: Option<String>,
    },
    /// Send the user's name and password with every request.
    Basic,
}

impl Challenge {
    /// Parse a `WWW-Authenticate` value: a scheme, then `key=value` (or
    /// `key="quoted, value"`) pairs. `None`: a scheme berth does not
    /// speak, or a `Bearer` without a realm.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parameters(rest);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            }),
            _ => None,
        }
    }
}

/// `key=value, key="value"` pairs, keys lowercased.
fn parameters(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
                .collect();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    out
}

/// What a user gave to be known by a registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The user's name.
    pub username: String,
    /// The password (or a personal access token).
    pub password: String,
    /// A refresh token from an earlier login, sent to the token server
    /// instead of the password.
    pub identity_token: String,
}

impl Credentials {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.identity_token.is_empty()
    }

    /// `Basic base64(user:password)`.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// The JSON in `X-Registry-Auth` (Docker's `AuthConfig`).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuthConfig {
    /// The user's name.
    #[serde(default)]
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: String,
    /// `base64(user:password)`, as `config.json` stores it.
    #[serde(default)]
    pub auth: String,
    /// The registry.
    #[serde(default, rename = "serveraddress")]
    pub server_address: String,
    /// A refresh token.
    #[serde(default, rename = "identitytoken")]
    pub identity_token: String,
}

impl AuthConfig {
    /// The credentials it carries (`auth` split if the name is not given
    /// apart).
    pub fn credentials(&self) -> Credentials {
        let mut credentials = Credentials {
            username: self.username.clone(),
            password: self.password.clone(),
            identity_token: self.identity_token.clone(),
        };
        if credentials.username.is_empty()
            && let Some((user, password)) = decode_pair(&self.auth)
        {
            credentials.username = user;
            credentials.password = password;
        }
        credentials
    }
}

/// `base64(user:password)` split.
fn decode_pair(auth: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The credentials of an `X-Registry-Auth` header: base64url JSON, with
/// or without padding (the docker CLI sends it so, and `e30=`, `{}`,
/// when it has none). A header that does not decode carries none.
pub fn from_header(value: &str) -> Credentials {
    let value = value.trim().trim_end_matches('=');
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(value)
        });
    decoded
        .ok()
        .and_then(|bytes| serde_json::from_slice::<AuthConfig>(&bytes).ok())
        .map(|config| config.credentials())
        .unwrap_or_default()
}

/// The `X-Registry-Auth` value for `credentials` at `server`.
pub fn to_header(credentials: &Credentials, server: &str) -> String {
    let config = AuthConfig {
        username: credentials.username.clone(),
        password: credentials.password.clone(),
        auth: String::new(),
        server_address: server.to_owned(),
        identity_token: credentials.identity_token.clone(),
    };
    base64::engine::general_purpose::URL_SAFE
        .encode(serde_json::to_vec(&config).unwrap_or_default())
}

/// A token server's answer (distribution's `token.md`): `token`, or
/// `access_token` as OAuth 2 names it.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// The bearer token.
    #[serde(default)]
    pub token: String,
    /// The same, by its OAuth 2 name.
    #[serde(default)]
    pub access_token: String,
}

impl TokenResponse {
    /// The token, whichever name it came under.
    pub fn into_token(self) -> Option<String> {
        [self.token, self.access_token]
            .into_iter()
            .find(|t| !t.is_empty())
    }
}

/// The key Docker's `config.json` files a registry under: Docker Hub's
/// historical URL, the host (and port) of any other.
pub fn config_key(domain: &str) -> String {
    if domain == crate::image::reference::DEFAULT_DOMAIN {
        "https://index.docker.io/v1/".to_owned()
    } else {
        domain.to_owned()
    }
}

/// Docker's client configuration: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`. `berth login` writes the same file as
/// `docker login` (its `auths`), so that either sees the other's.
pub fn config_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker/config.json")
}

/// The file, as a JSON object (empty if absent): the keys berth does not
/// know are kept as they are.
fn read_config(
    path: &Path,
) -> Result<serde_json::Map<String, serde_json::Value>, path_io::PathIo> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            path_io::at("parse", path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e,
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(serde_json::Map::new())
        }
        Err(e) => Err(path_io::at("read", path)(e)),
    }
}

/// The credentials `config.json` at `path` holds for `domain`.
pub fn load(path: &Path, domain: &str) -> Result<Credentials, path_io::PathIo> {
    let config = read_config(path)?;
    let entry = config
        .get("auths")
        .and_then(|auths| auths.get(config_key(domain)))
        .cloned()
        .unwrap_or_default();
    Ok(serde_json::from_value::<AuthConfig>(entry)
        .unwrap_or_default()
        .credentials())
}

/// Record (`Some`) or forget (`None`) the credentials for `domain` in
/// `config.json` at `path`; the file is replaced whole, mode 0600 (it
/// holds a password). Whether an entry was there before.
pub fn save(
    path: &Path,
    domain: &str,
    credentials: Option<&Credentials>,
) -> Result<bool, path_io::PathIo> {
    let mut config = read_config(path)?;
    let auths = config
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    let auths = auths.as_object_mut().unwrap_or_else(|| unreachable!());
    let key = config_key(domain);
    let existed = auths.contains_key(&key);
    match credentials {
        Some(credentials) => {
            let pair =
                format!("{}:{}", credentials.username, credentials.password);
            let mut entry = serde_json::json!({
                "auth": base64::engine::general_purpose::STANDARD.encode(pair),
            });
            if !credentials.identity_token.is_empty() {
                entry["identitytoken"] =
                    credentials.identity_token.clone().into();
            }
            auths.insert(key, entry);
        }
        None => {
            auths.remove(&key);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(path_io::at("create", dir))?;
    }
    let mut bytes = serde_json::to_vec_pretty(&config).unwrap_or_default();
    bytes.push(b'\n');
    path_io::replace_durably(path, &bytes, 0o600)?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let header = r#"Bearer realm="http://127.0.0.1:5001/token",service="reg",scope="repository:a/b:pull,push""#;
        assert_eq!(
            Challenge::parse(header),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5001/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn registry_auth_headers_decode_in_every_padding() {
        let config = r#"{"username":"u","password":"p:w","serveraddress":"h"}"#;
        for engine in [
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let header = engine.encode(config);
            let credentials = from_header(&header);
            assert_eq!(credentials.username, "u");
            assert_eq!(credentials.password, "p:w");
        }
        assert!(from_header("e30=").is_empty());
        assert!(from_header("not base64 !").is_empty());
        let round = from_header(&to_header(
            &Credentials {
                username: "a".into(),
                password: "b".into(),
                identity_token: String::new(),
            },
            "h",
        ));
        assert_eq!(
            (round.username.as_str(), round.password.as_str()),
            ("a", "b")
        );
    }
}
