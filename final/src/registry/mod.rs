//! The distribution-spec client: images in from registries (`pull`) and
//! out to them (`push`), and the credentials of `login`.
//!
//! ```text
//!   GET  /v2/                                 who are you? (401: a challenge)
//!   GET  REALM?service=S&scope=repository:R:pull     a bearer token
//!   GET  /v2/R/manifests/TAG                  an index, or a manifest
//!   GET  /v2/R/manifests/DIGEST               the platform's manifest
//!   GET  /v2/R/blobs/DIGEST                   the config, each layer
//!   HEAD /v2/R/blobs/DIGEST                   (push) there already?
//!   POST /v2/R/blobs/uploads/?mount=D&from=O  (push) mount, or start
//!   PATCH, PUT LOCATION?digest=D              (push) the bytes
//!   PUT  /v2/R/manifests/TAG                  (push) the manifest, last
//! ```
//!
//! - [`client`]: HTTP with hyper (TLS by rustls with the system's roots;
//!   plain HTTP only for loopback and `--insecure-registry`), the token
//!   and basic auth flows, bounded bodies, redirects, a trace of every
//!   request.
//! - [`auth`]: challenges, credentials (`X-Registry-Auth`, Docker's
//!   `config.json`).
//! - [`manifest`]: media types, platforms, the index's choice.
//! - [`pull`] and [`push`]; [`progress`]: Docker's JSON progress
//!   messages, which the docker CLI renders.
//!
//! Why not a registry crate: `oci-client` (0.18) reads a manifest's and
//! a token server's answer whole, with no bound, and shows no request
//! it makes; a pull here must refuse a manifest of a gigabyte and trace
//! each request for the book. HTTP itself is hyper's, as for the API.

pub mod auth;
pub mod client;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;

use crate::image::digest::Digest;
use crate::image::{snapshot, store};

/// What can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection, or it broke.
    #[error("{method} {url}: {message}")]
    Connect {
        /// The request's method.
        method: String,
        /// Its URL.
        url: String,
        /// The connector's complaint, its causes joined.
        message: String,
    },
    /// The registry answered with an error; `message` as Docker prints
    /// it (`denied: requested access to the resource is denied`).
    #[error("{context}: {message}")]
    Registry {
        /// What was asked (`manifest for HOST/REPO:TAG not found`, or the
        /// request).
        context: String,
        /// The HTTP status.
        status: u16,
        /// The registry's errors, Docker's way.
        message: String,
    },
    /// The registry wants credentials it did not get, or refused them.
    #[error("{url}: unauthorized: {message}")]
    Unauthorized {
        /// The request.
        url: String,
        /// Why.
        message: String,
    },
    /// A chain of redirects too long (or a loop).
    #[error("{url}: stopped after {max} redirects", max = client::MAX_REDIRECTS)]
    Redirects {
        /// The first URL.
        url: String,
    },
    /// An answer larger than its bound.
    #[error("{url}: the answer is larger than {limit} bytes")]
    TooBig {
        /// The request.
        url: String,
        /// The bound.
        limit: u64,
    },
    /// Content that is not what its digest says.
    #[error(
        "{what}: the registry sent content of digest {actual}, not {expected}"
    )]
    Digest {
        /// Which content.
        what: String,
        /// Its digest.
        expected: Digest,
        /// What arrived.
        actual: Digest,
    },
    /// A blob shorter or longer than its descriptor says.
    #[error(
        "{what}: the registry sent {got} bytes where the manifest says {expected}"
    )]
    Size {
        /// Which blob.
        what: String,
        /// Its descriptor's size.
        expected: u64,
        /// What arrived (one past the size: more).
        got: u64,
    },
    /// A manifest or index that cannot be used.
    #[error("{reference}: {why}")]
    Manifest {
        /// The image.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// A request or an answer that is not HTTP as it should be (a bad
    /// `Location`, a refused downgrade to plain HTTP).
    #[error("{url}: {why}")]
    Protocol {
        /// The request.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Unpacking a layer.
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    /// A file of ours (`config.json`, a blob being read for a push).
    #[error(transparent)]
    Io(#[from] crate::path_io::PathIo),
}

impl Error {
    /// Whether this is the registry's "not found" (a 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Registry { status: 404, .. })
    }

    /// Whether the registry refused access (401, 403, or no
    /// credentials).
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            Error::Unauthorized { .. }
                | Error::Registry {
                    status: 401 | 403,
                    ..
                }
        )
    }
}
