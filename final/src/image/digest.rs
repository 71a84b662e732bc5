//! Content addresses: `sha256:` and 64 lowercase hex digits (image-spec
//! `descriptor.md`, "Digests"), and readers that compute or check one as
//! the bytes go by.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest, the only algorithm the store accepts (image-spec
/// registers `sha512` too; no image in use carries one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// A string that is not `sha256:` and 64 lowercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a sha256 digest (sha256: and 64 lowercase hex digits)")]
pub struct BadDigest(pub String);

/// The digests named by the files of `dir` (`<hex>` each, under a
/// `sha256/` directory); other names are left out.
pub fn digests_in(dir: &std::path::Path) -> io::Result<Vec<Digest>> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            format!("sha256:{}", e.file_name().to_string_lossy())
                .parse()
                .ok()
        })
        .collect())
}

impl Digest {
    /// The 64 hex digits: a file name in `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of everything `hashing` read.
    pub fn of_read<R: Read>(hashing: Hashing<R>) -> Digest {
        Digest { hex: hashing.hex() }
    }

    /// The digest a SHA-256 hasher has computed.
    pub fn from_sha256(hasher: Sha256) -> Digest {
        Digest::from_hasher(hasher)
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    // ANCHOR: chain
    /// The chain ID of a layer whose parent's chain ID is `parent` and
    /// whose own diff ID is `self` (image-spec `config.md`, "Layer
    /// ChainID"): the digest of the two, space-separated. The bottom
    /// layer's chain ID is its diff ID.
    pub fn chain(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(parent) => {
                Digest::of(format!("{parent} {diff_id}").as_bytes())
            }
        }
    }
    // ANCHOR_END: chain
}

impl FromStr for Digest {
    type Err = BadDigest;

    fn from_str(text: &str) -> Result<Digest, BadDigest> {
        let hex = text
            .strip_prefix("sha256:")
            .filter(|hex| {
                hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
            .ok_or_else(|| BadDigest(text.to_owned()))?;
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// A reader that hashes and counts what passes through it: step 7's.
pub use crate::overlay::Hashing;

/// A reader of a blob that checks, when it reaches the end, that what it
/// read has the digest the blob is stored under: a blob changed on disk
/// after it was written gives an error, never its bytes' end.
pub struct Verified<R> {
    hashing: Option<Hashing<R>>,
    expected: Digest,
}

impl<R: Read> Verified<R> {
    /// Read `inner`, which must hash to `expected`.
    pub fn new(inner: R, expected: Digest) -> Verified<R> {
        Verified {
            hashing: Some(Hashing::new(inner)),
            expected,
        }
    }
}

// ANCHOR: verified
impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hashing) = self.hashing.as_mut() else {
            return Ok(0);
        };
        let n = hashing.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let actual = self.hashing.take().map(Digest::of_read);
            if actual.as_ref() != Some(&self.expected) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} changed on disk: its content has digest {}",
                        self.expected,
                        actual.map(|d| d.to_string()).unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(n)
    }
}
// ANCHOR_END: verified

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_only_in_their_canonical_form() {
        let hex = "a".repeat(64);
        assert_eq!(
            format!("sha256:{hex}").parse::<Digest>().unwrap().hex(),
            hex
        );
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{hex}"),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:../{}", "a".repeat(61)),
            hex.clone(),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_digest_of_nothing_is_sha256s() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_verified_reader_fails_at_the_end_of_other_bytes() {
        let good = Digest::of(b"layer");
        let mut out = Vec::new();
        Verified::new(&b"layer"[..], good.clone())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"layer");
        let err = Verified::new(&b"lAyer"[..], good)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_chain_id_hashes_the_parents_chain_and_the_diff_id() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert_eq!(Digest::chain(None, &a), a);
        assert_eq!(
            Digest::chain(Some(&a), &b),
            Digest::of(format!("{a} {b}").as_bytes())
        );
    }
}
