//! refbox (being built out; see ../shared/DESIGN.md).
