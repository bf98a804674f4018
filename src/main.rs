//! The `krscore` binary: a thin shell over [`krscore::cli`].

fn main() -> std::process::ExitCode {
    krscore::cli::main()
}
