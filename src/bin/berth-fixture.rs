//! `berth-fixture [DIR]`: build the busybox + probe rootfs (default
//! `target/rootfs`) and print its path. The demo uses it; the tests build
//! the same rootfs through the library.
//!
//! `berth-fixture --docker-archive FILE TAG`: write that rootfs as an
//! image in `docker save`'s format (what `docker load` and `podman load`
//! take), for the demo's docker part.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--docker-archive") {
        let (Some(file), Some(tag)) = (args.get(1), args.get(2)) else {
            anyhow::bail!("usage: berth-fixture --docker-archive FILE TAG");
        };
        let rootfs = berth_tests::fixture::rootfs();
        let tag = tag.to_str().context("the tag is not UTF-8")?;
        let archive = berth_tests::daemons::docker_archive(rootfs, tag);
        std::fs::write(file, archive).with_context(|| {
            format!("cannot write {}", file.to_string_lossy())
        })?;
        return Ok(());
    }
    let dir = match args.first() {
        Some(dir) => PathBuf::from(dir),
        None => berth_tests::target_dir().join("rootfs"),
    };
    berth_tests::fixture::build_rootfs(&dir).with_context(|| {
        format!("cannot build the rootfs in {}", dir.display())
    })?;
    println!("{}", dir.display());
    Ok(())
}
