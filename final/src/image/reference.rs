//! Image references as Docker reads them: `busybox` is
//! `docker.io/library/busybox:latest`, `localhost:5000/app:v1` names its
//! registry, `@sha256:…` pins a digest.

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;

/// The registry a name without one is on.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A reference, normalised: domain, path, then a tag or a digest (a name
/// without either is `:latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// The registry's host, with its port if any.
    pub domain: String,
    /// The repository: `library/busybox`, `team/app`.
    pub path: String,
    /// `:tag` or `@digest`.
    pub version: Version,
}

/// What a reference points at within its repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// A tag, moved by whoever pushes.
    Tag(String),
    /// A manifest digest, fixed.
    Digest(Digest),
}

/// A string that is not an image reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid reference format: {reference:?} ({why})")]
pub struct BadReference {
    /// The string.
    pub reference: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Whether `component` is a path component of the distribution spec:
/// lowercase alphanumerics separated by one `.`, one or two `_`, or `-`s.
fn is_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1])
    {
        return false;
    }
    let mut run = String::new();
    for &b in bytes {
        if alnum(&b) {
            let separator = run.is_empty()
                || run == "."
                || run == "_"
                || run == "__"
                || run.bytes().all(|r| r == b'-');
            if !separator {
                return false;
            }
            run.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            run.push(b as char);
        } else {
            return false;
        }
    }
    true
}

/// Whether `domain` is a registry: a host name (dot-separated labels of
/// letters, digits and inner `-`) or a bracketed IPv6 address, then an
/// optional `:port`.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
            (host, Some(port))
        }
        _ => (domain, None),
    };
    if port
        .is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if let Some(inner) =
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
    {
        return !inner.is_empty()
            && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `tag` is a tag: a word character, then up to 127 of word
/// characters, `.` and `-`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

impl FromStr for Reference {
    type Err = BadReference;

    fn from_str(text: &str) -> Result<Reference, BadReference> {
        let bad = |why| BadReference {
            reference: text.to_owned(),
            why,
        };
        if text.len() > 255 {
            return Err(bad("longer than 255 characters"));
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(digest.parse::<Digest>().map_err(|_| bad("bad digest"))?),
            ),
            None => (text, None),
        };
        // A tag follows the last ':' that is after the last '/' (a ':'
        // before it is a registry's port).
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
            None => (name, None),
        };
        if tag.is_some_and(|tag| !is_tag(tag)) {
            return Err(bad("bad tag"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !is_domain(&domain) {
            return Err(bad("bad registry name"));
        }
        if !path.split('/').all(is_component) {
            return Err(bad(
                "repository names are lowercase letters, digits and separators",
            ));
        }
        let version = match (digest, tag) {
            (Some(digest), _) => Version::Digest(digest),
            (None, Some(tag)) => Version::Tag(tag.to_owned()),
            (None, None) => Version::Tag("latest".to_owned()),
        };
        Ok(Reference {
            domain,
            path,
            version,
        })
    }
}

impl Reference {
    /// The repository with its domain: `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as `docker images` shows it: `busybox`,
    /// `team/app`, `localhost:5000/app`.
    pub fn familiar_repository(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.repository();
        }
        self.path
            .strip_prefix("library/")
            .unwrap_or(&self.path)
            .to_owned()
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        match &self.version {
            Version::Tag(tag) => Some(tag),
            Version::Digest(_) => None,
        }
    }

    /// `busybox:latest`, as docker prints a reference.
    pub fn familiar(&self) -> String {
        match &self.version {
            Version::Tag(tag) => {
                format!("{}:{tag}", self.familiar_repository())
            }
            Version::Digest(d) => format!("{}@{d}", self.familiar_repository()),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Version::Tag(tag) => write!(f, "{}:{tag}", self.repository()),
            Version::Digest(d) => write!(f, "{}@{d}", self.repository()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_docker_does() {
        let hex = "b".repeat(64);
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            ("team/app", "docker.io/team/app:latest", "team/app:latest"),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "127.0.0.1:5000/a/b:v1.0-rc_1",
                "127.0.0.1:5000/a/b:v1.0-rc_1",
                "127.0.0.1:5000/a/b:v1.0-rc_1",
            ),
            (
                "docker.io/library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
        ];
        for (input, full, familiar) in cases {
            let reference: Reference = input.parse().unwrap();
            assert_eq!(reference.to_string(), full, "{input}");
            assert_eq!(reference.familiar(), familiar, "{input}");
        }
        let pinned: Reference =
            format!("busybox@sha256:{hex}").parse().unwrap();
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/busybox@sha256:{hex}")
        );
        assert_eq!(pinned.tag(), None);
    }

    #[test]
    fn what_docker_refuses_is_refused() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "-a/b",
            "a/b-",
            "a..b/c",
            "busybox@sha256:abc",
            "busybox:t@g",
            "a/b c",
            &"a".repeat(256),
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?}");
        }
    }
}
