//! `refbox`: the reference runtime's command line (see `refbox --help`).

fn main() -> std::process::ExitCode {
    refbox::cli::main()
}
