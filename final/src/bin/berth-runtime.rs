//! `berth-runtime`: an OCI runtime with runc's command line. Everything is
//! in the library ([`berth::runtime::cli`]).

fn main() -> std::process::ExitCode {
    berth::runtime::cli::main()
}
