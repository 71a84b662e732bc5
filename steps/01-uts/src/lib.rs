//! # berth step 1: a UTS namespace of its own
//!
//! The smallest container there is: a child process with its own hostname.
//! `step01-uts --hostname box -- hostname` prints `box`, and the host's
//! hostname is untouched.
//!
//! Every later step re-exports this crate (`pub use step01_uts::*;`) and adds
//! one module, so the final runtime is built on exactly this code.
//!
//! # Layout
//!
//! - [`child`]: the container is a child process. [`child::spawn`] creates it
//!   with `clone(2)` and the namespace flags the caller asks for, reports any
//!   failure before `COMMAND` runs back to the parent, and
//!   [`child::Child::wait`] forwards signals to it and turns its end into an
//!   exit code (`128 + N` for a death by signal `N`). Step 1 needs this
//!   scaffolding before it can show any namespace; it is the one step that
//!   adds two modules.
//! - [`uts`]: the UTS namespace (`uts_namespaces(7)`): a validated
//!   [`uts::Hostname`] and [`uts::set_hostname`].
//! - [`trace`]: off unless a runtime turns it on (Part II): each kernel
//!   operation of every step, one line each, naming the step that
//!   teaches it. The steps call [`trace::event`] where they act.

pub mod child;
pub mod trace;
pub mod uts;
