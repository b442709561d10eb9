//! The `flashgate` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    flashgate::cli::main()
}
