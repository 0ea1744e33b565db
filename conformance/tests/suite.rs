//! The catalog against refbox built from this workspace, as a libtest-style
//! test binary (harness = false) so `cargo nextest run` drives it, one
//! process per case, with the same code as `doppel run`.

fn main() -> std::process::ExitCode {
    doppel_conformance::cli::suite_main()
}
