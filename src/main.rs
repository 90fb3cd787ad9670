//! The `sharegate` binary: everything is in the library; see `cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    sharegate::cli::main()
}
