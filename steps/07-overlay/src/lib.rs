//! # berth step 7: image layers and overlayfs
//!
//! The root filesystem no longer has to be a directory: `--image LAYER`
//! (repeated, bottom first) stacks layer tarballs with overlayfs, each
//! unpacked once into a content-addressed directory and shared, with a
//! writable upper directory per container. Image-spec whiteouts become
//! overlayfs whiteouts and back (`--commit FILE` exports the container's
//! changes as a new layer). Unpacking treats layers as hostile.
//!
//! # Layout
//!
//! - everything from steps 1–6 ([`child`], [`uts`], [`pid`], [`mount`],
//!   [`net`], [`user`], [`cgroup`]), re-exported;
//! - [`overlay`]: the [`overlay::Store`] of layers and containers, the
//!   overlay [`overlay::Container::mount`], with [`overlay::unpack`] (safe
//!   unpacking, whiteouts in) and [`overlay::commit`] (changes out).

pub use step06_cgroups::*;

pub mod overlay;
