//! `berth-fixture [DIR]`: build the busybox + probe rootfs (default
//! `target/rootfs`) and print its path. The demo uses it; the tests build
//! the same rootfs through the library.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => berth_tests::target_dir().join("rootfs"),
    };
    berth_tests::fixture::build_rootfs(&dir).with_context(|| {
        format!("cannot build the rootfs in {}", dir.display())
    })?;
    println!("{}", dir.display());
    Ok(())
}
