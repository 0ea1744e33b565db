//! doppel-benches (being built out; see ../shared/DESIGN.md).
