//! The `flashgate` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    flashgate::cli::main()
}

// The proxy path allocates a little per request; mimalloc's thread-local free lists make
// that measurably cheaper than glibc malloc (see bench/passthrough.sh).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
