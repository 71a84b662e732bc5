//! `berth-runtime` starts at `berth::runtime::early::berth_runtime_entry`
//! (x86-64 Linux), which re-executes `create`, `run` and `exec` before the
//! C library sets itself up, and otherwise jumps to the C library's
//! `_start`. The module's docs say why.

fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let width = std::env::var("CARGO_CFG_TARGET_POINTER_WIDTH");
    if arch == "x86_64" && os == "linux" && width.as_deref() == Ok("64") {
        let entry = "-Wl,--entry=berth_runtime_entry";
        println!("cargo:rustc-link-arg-bin=berth-runtime={entry}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
