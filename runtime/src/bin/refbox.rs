//! `refbox`: the reference runtime's command line (see `refbox --help`).
//!
//! `#![no_main]`: the C runtime's `main` calls [`refbox::cli::process_main`]
//! directly, skipping Rust's own start-up, because `refbox` is exec'ed once
//! per operation and that start-up is part of every answer. It finds the
//! main thread's stack by parsing `/proc/self/maps` (for a stack-overflow
//! message), installs signal handlers and sanitizes the standard fds: about
//! 0.17 ms of `refbox state` on the project's VM (1.85 → 1.69 ms, measured
//! side by side), more than `state` spends on its box. `process_main` does
//! the parts that matter here (standard fds, SIGPIPE, panic → exit 101,
//! flushing stdout); a stack overflow ends in a plain SIGSEGV.
#![no_main]

use std::ffi::{c_char, c_int};

/// The process entry called by the C runtime (glibc hands `argc`/`argv` to
/// Rust's `std::env` before this runs, so they are not needed here).
// SAFETY: `no_mangle` exports this as the binary's one C `main` symbol, with
// the signature the C runtime calls; no other item of this binary (nor of
// the libraries it links: they are rlibs without a `main`) defines `main`.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    refbox::cli::process_main()
}
