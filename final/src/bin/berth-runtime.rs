//! `berth-runtime`: an OCI runtime with runc's command line. Everything is
//! in the library ([`berth::runtime::cli`]).

/// The binary's entry point (`build.rs` names it to the linker), kept in
/// the link: nothing else refers to it.
#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    target_pointer_width = "64"
))]
#[used]
static ENTRY: unsafe extern "C" fn() -> ! =
    berth::runtime::early::berth_runtime_entry;

fn main() -> std::process::ExitCode {
    berth::runtime::cli::main()
}
