//! Links GCC's unwinder statically (`libgcc_eh.a`, what `gcc -static-libgcc`
//! does) instead of loading `libgcc_s.so.1` at every start.
//!
//! Why: `refbox` is exec'ed once per command (`state`, `list`, ...), so its
//! start-up is part of every answer. Loading `libgcc_s` costs an extra
//! shared object for the dynamic loader and runs its constructor, which
//! probes the CPU with `cpuid`; in a VM every `cpuid` traps to the
//! hypervisor. Measured on the project's 2-vCPU Firecracker VM (an empty
//! Rust `main`, 500 interleaved runs): 1.17 ms with `libgcc_s`, 1.01 ms
//! without. The static unwinder works the same for Rust's panics (the
//! binaries carry `.eh_frame_hdr`); only a program that throws across
//! shared libraries built with another unwinder would care, and refbox
//! loads none.
//!
//! Skipped (the binaries then load `libgcc_s` as usual) when the target is
//! not Linux with glibc, when it is linked statically anyway, or when the C
//! toolchain has no `libgcc_eh.a`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let static_crt = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" || static_crt {
        return;
    }
    // The C driver that links Rust binaries knows where its libgcc lives;
    // `-print-file-name` answers the bare name when it has none.
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let found = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .is_some_and(|p| Path::new(&p).is_absolute() && Path::new(&p).exists());
    if found {
        // `-bundle`: not copied into the rlib; the final link finds it
        // through the C driver, ahead of std's `-lgcc_s`, which `--as-needed`
        // then drops.
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
}
