//! `doppel`: the conformance suite runner. See `doppel --help`.

fn main() -> std::process::ExitCode {
    doppel_conformance::cli::main()
}
