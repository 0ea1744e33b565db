//! doppel-harness (being built out; see ../shared/DESIGN.md).
