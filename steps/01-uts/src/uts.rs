//! The UTS namespace: a hostname of the container's own.
//!
//! `uts_namespaces(7)`: a UTS namespace isolates the two identifiers that
//! `uname(2)` reports and `sethostname(2)` / `setdomainname(2)` change. A
//! process created with `CLONE_NEWUTS` starts with a *copy* of its parent's
//! names; changing them changes the copy only. That is all it takes for
//! `hostname` inside the container to print something else than on the host.
//!
//! The name comes from the command line, so it is checked here, before any
//! process is created, rather than left to the kernel's `EINVAL` later.

use std::fmt;
use std::str::FromStr;

use nix::errno::Errno;
use nix::sched::CloneFlags;

/// The `clone(2)` flag this module needs.
pub const CLONE_FLAGS: CloneFlags = CloneFlags::CLONE_NEWUTS;

/// `HOST_NAME_MAX` on Linux: the longest name `sethostname(2)` accepts.
pub const HOST_NAME_MAX: usize = 64;

/// What can go wrong with a hostname.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is not a valid hostname (RFC 1123 labels, at most 64 bytes).
    #[error("invalid hostname {name:?}: {reason}")]
    Invalid {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `sethostname(2)` failed (`EPERM`: not in a UTS namespace we own).
    #[error("sethostname({name:?}) failed")]
    Set {
        /// The name we tried to set.
        name: String,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

// ANCHOR: hostname
/// A hostname that `sethostname(2)` will accept and resolvers will too:
/// dot-separated labels of ASCII letters, digits and `-`, none starting or
/// ending with `-`, at most [`HOST_NAME_MAX`] bytes in all.
///
/// The kernel itself only checks the length; refusing `"my box"` or `"a/b"`
/// here is a choice, the one Docker makes too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

impl FromStr for Hostname {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::Invalid {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > HOST_NAME_MAX {
            return Err(invalid("it is longer than 64 bytes"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(invalid("it has an empty label"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label starts or ends with '-'"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(invalid(
                    "only letters, digits, '-' and '.' are allowed",
                ));
            }
        }
        Ok(Hostname(name.to_owned()))
    }
}
// ANCHOR_END: hostname

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The command-line options this module adds: `--hostname NAME`.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "uts-options")]
pub struct Options {
    /// Hostname inside the container (default: a copy of the host's)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<Hostname>,
}

// ANCHOR: set_hostname
/// Set the hostname of the calling process's UTS namespace.
///
/// Call it in the child, after `clone(CLONE_NEWUTS)`: in the host's
/// namespace it would rename the host.
pub fn set_hostname(name: &Hostname) -> Result<(), Error> {
    crate::trace::event(1, || format!("sethostname({name})"));
    nix::unistd::sethostname(name.as_ref()).map_err(|source| Error::Set {
        name: name.to_string(),
        source,
    })
}
// ANCHOR_END: set_hostname

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["box", "web-1", "a.b.example", "x"] {
            assert_eq!(name.parse::<Hostname>().unwrap().as_ref(), name);
        }
        let longest = "a".repeat(HOST_NAME_MAX);
        assert!(longest.parse::<Hostname>().is_ok());
    }

    #[test]
    fn refuses_what_a_resolver_would_not_take() {
        for (name, reason) in [
            ("", "it is empty"),
            ("my box", "only letters, digits, '-' and '.' are allowed"),
            ("a/b", "only letters, digits, '-' and '.' are allowed"),
            ("-web", "a label starts or ends with '-'"),
            ("a..b", "it has an empty label"),
        ] {
            match name.parse::<Hostname>() {
                Err(Error::Invalid { reason: got, .. }) => {
                    assert_eq!(got, reason, "{name:?}")
                }
                other => panic!("{name:?} gave {other:?}"),
            }
        }
        let too_long = "a".repeat(HOST_NAME_MAX + 1);
        assert!(matches!(
            too_long.parse::<Hostname>(),
            Err(Error::Invalid {
                reason: "it is longer than 64 bytes",
                ..
            })
        ));
    }
}
