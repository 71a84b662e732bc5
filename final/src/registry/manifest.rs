//! What a registry's manifest endpoint answers: an image index (a
//! manifest list, in Docker's words) of one manifest per platform, or a
//! manifest itself, in the OCI media types or Docker's (schema 2), which
//! have the same shape. Schema 1 is refused, as current Docker does.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex};

/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's manifest list.
pub const DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's image manifest, schema 2.
pub const DOCKER_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header of a manifest request: every type berth reads.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The biggest manifest or index read (Docker's bound too).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Which of the two a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An index: one manifest per platform.
    Index,
    /// A manifest: a config and layers.
    Manifest,
}

/// Just the fields that tell a document's kind.
#[derive(serde::Deserialize)]
struct Versioned {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

/// The kind of the document `bytes`, by its `mediaType` field, else the
/// `Content-Type` it came with, else its shape.
pub fn kind(content_type: Option<&str>, bytes: &[u8]) -> Result<Kind, String> {
    let versioned: Versioned = serde_json::from_slice(bytes)
        .map_err(|e| format!("the manifest is not JSON: {e}"))?;
    if versioned.schema_version != 2 {
        return Err(format!(
            "schema version {} manifests are not supported (only 2)",
            versioned.schema_version
        ));
    }
    let media_type = versioned.media_type.or_else(|| {
        content_type
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
    });
    match media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => Ok(Kind::Index),
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(Kind::Manifest),
        _ if versioned.manifests.is_some() => Ok(Kind::Index),
        Some(other)
            if other != "application/json"
                && other != "application/octet-stream" =>
        {
            Err(format!("unsupported manifest media type {other}"))
        }
        _ => Ok(Kind::Manifest),
    }
}

/// The media type to send a stored manifest under: its own `mediaType`,
/// else OCI's.
pub fn media_type_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Versioned>(bytes)
        .ok()
        .and_then(|v| v.media_type)
        .unwrap_or_else(|| OCI_MANIFEST.to_owned())
}

/// An operating system, architecture and variant: `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// Go's names: `amd64`, `arm64`, `arm`, `386`, `s390x`, …
    pub architecture: String,
    /// `v7`, `v8`; empty for none.
    pub variant: String,
}

impl Platform {
    /// This machine's, in Go's names (what Docker defaults to).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: String::new(),
        }
        .normalised()
    }

    /// The variant an architecture means without one: `arm64` is `v8`,
    /// `arm` is `v7` (containerd's rule).
    fn normalised(mut self) -> Platform {
        if self.variant.is_empty() {
            self.variant = match self.architecture.as_str() {
                "arm64" => "v8".into(),
                "arm" => "v7".into(),
                _ => String::new(),
            };
        }
        self
    }

    /// Whether the index entry's `platform` is this one.
    pub fn matches(&self, platform: &oci_spec::image::Platform) -> bool {
        let theirs = Platform {
            os: platform.os().to_string(),
            architecture: platform.architecture().to_string(),
            variant: platform.variant().clone().unwrap_or_default(),
        }
        .normalised();
        theirs == *self
    }
}

impl FromStr for Platform {
    type Err = String;

    /// `os/arch[/variant]`, or `arch` alone (on linux).
    fn from_str(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if parts.len() > 3 || !parts.iter().all(valid) {
            return Err(format!(
                "invalid platform {text:?}: it must be os/arch[/variant]"
            ));
        }
        let lower = |s: &str| s.to_ascii_lowercase();
        let platform = match parts.as_slice() {
            [arch] => Platform {
                os: "linux".into(),
                architecture: lower(arch),
                variant: String::new(),
            },
            [os, arch] => Platform {
                os: lower(os),
                architecture: lower(arch),
                variant: String::new(),
            },
            [os, arch, variant] => Platform {
                os: lower(os),
                architecture: lower(arch),
                variant: lower(variant),
            },
            _ => unreachable!("one to three parts"),
        };
        Ok(platform.normalised())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

// ANCHOR: choose
/// The entry of `index` for `platform` (the first, if several), or the
/// platforms it has instead.
pub fn choose<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
) -> Result<&'a Descriptor, Vec<String>> {
    index
        .manifests()
        .iter()
        .find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| {
            index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| {
                    let mut name = format!("{}/{}", p.os(), p.architecture());
                    if let Some(variant) = p.variant() {
                        name = format!("{name}/{variant}");
                    }
                    name
                })
                .collect()
        })
}
// ANCHOR_END: choose

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_normalise_as_containerd_does() {
        let p: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        let p: Platform = "amd64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        assert!("linux/amd64/v1/x".parse::<Platform>().is_err());
        assert!("linux//amd64".parse::<Platform>().is_err());
        assert!("linux/../x".parse::<Platform>().is_err());
    }

    #[test]
    fn the_kind_comes_from_the_media_type_then_the_shape() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(kind(None, index), Ok(Kind::Index));
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(kind(Some(OCI_INDEX), docker), Ok(Kind::Manifest));
        let plain = br#"{"schemaVersion":2,"config":{}}"#;
        assert_eq!(kind(Some(OCI_MANIFEST), plain), Ok(Kind::Manifest));
        assert!(kind(None, br#"{"schemaVersion":1}"#).is_err());
        assert!(kind(None, b"<html>").is_err());
    }
}
