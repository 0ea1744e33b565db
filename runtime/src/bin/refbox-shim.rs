//! `refbox-shim <box_id> [--label TEXT]...`: one box's supervisor. Started by
//! `refbox create`/`run`/`start` with the box dir as cwd and its
//! configuration on stdin; not meant to be run by hand. `--label` values are
//! ignored annotations (never secrets). `refbox-shim --guard` is the payload
//! group's guard a shim starts (see `refbox::shim`), not for use by hand.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(refbox::shim::GUARD_FLAG) {
        // The payload group's guard (see refbox::shim): returns only on error.
        let e = refbox::shim::guard_main();
        eprintln!("refbox-guard: {e}");
        return ExitCode::from(2);
    }
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
