//! doppel-conformance (being built out; see ../shared/DESIGN.md).
