//! `refbox-helper --socket PATH serve|signal|prepare|kill-box|remove`:
//! refbox's privileged helper and its client (see `refbox::helper`).

fn main() -> std::process::ExitCode {
    refbox::helper::main()
}
