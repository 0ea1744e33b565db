//! `doppel-init`: PID 1 of a doppel world (see `doppel_harness::init`).

fn main() {
    let code = doppel_harness::init::main(std::env::args_os().skip(1));
    std::process::exit(code);
}
