# Everyday recipes. Install just with `cargo install just` (Debian 12 has no package).

# Run every test the way CI does (the README's test command).
test:
    cargo nextest run --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Run the conformance suite against the embedded refbox (the README's main command).
suite *ARGS:
    cargo build --release --workspace --bins
    ./target/release/doppel run {{ARGS}}

# Install the real runtimes the suite can drive: runc, crun, busybox-static
# (OCI bundle rootfs) from apt, youki with cargo (~5 min; skipped when present).
runtimes:
    bash fixtures/install-runtimes.sh

# refbox's binaries statically linked, as deployed (target/release/static/, with an
# adapter there): no dynamic loader at each command's start. See fixtures/build-static.sh.
static:
    bash fixtures/build-static.sh

# Regenerate docs/results.md: the catalog against refbox, runc, crun and youki.
results:
    bash fixtures/results.sh

# Criterion benches (world open/close, spawn_at vs wraparound, recovery latency).
bench *ARGS:
    cargo bench -p doppel-benches {{ARGS}}

# A quick pass over every bench: compiles and runs each once, for CI.
bench-quick:
    cargo bench -p doppel-benches -- --quick --noplot
