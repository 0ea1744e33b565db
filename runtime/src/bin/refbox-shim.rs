//! `refbox-shim <box_id> [--label TEXT]...`: one box's supervisor. Started by
//! `refbox create`/`run`/`start` with the box dir as cwd and its
//! configuration on stdin; not meant to be run by hand. `--label` values are
//! ignored annotations (never secrets).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(Ok(id)) = args.first().map(|a| refbox::BoxId::new(a)) else {
        refbox::shim::say_error(
            "usage: refbox-shim <box_id> [--label TEXT]... (configuration on stdin)",
        );
        return ExitCode::from(2);
    };
    match refbox::shim::run(&id) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            refbox::shim::say_error(&msg);
            eprintln!("refbox-shim {id}: {msg}");
            ExitCode::from(1)
        }
    }
}
