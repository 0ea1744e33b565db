//! `doppel-impostor`: the sleeper, zombie factory, orphan maker and daemon
//! that worlds place where a runtime expects its own process
//! (see `doppel_harness::impostor`).

fn main() {
    let code = doppel_harness::impostor::main(std::env::args_os().skip(1));
    std::process::exit(code);
}
