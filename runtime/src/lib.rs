//! refbox: Doppel's reference runtime, a small supervisor of boxes whose
//! process identity cannot be fooled by a recycled pid.
//!
//! Read [`ARCHITECTURE.md`](https://example.invalid/doppel/runtime/ARCHITECTURE.md)
//! (next to this crate's Cargo.toml) for the module map, the identity design,
//! and the on-disk layout. In short:
//!
//! - [`identity`]: the `shim.pid` record (v2: pid, start time, boot id, pidfs
//!   inode; v1: lone pid), written by the shim on itself before exec, and
//!   verified through a pidfd before any use;
//! - [`fsread`] / [`fswrite`]: capped, no-follow, non-blocking reads; atomic
//!   writes; private modes from creation;
//! - [`runtime::Runtime`]: the operations; [`cli`]: the `refbox` command;
//!   [`shim`]: the `refbox-shim` supervisor; [`reaper`]: the scoped reaper;
//!   [`embed`]: an embedder's own children beside the reaper (`refbox reaper-probe`);
//! - [`strategy::Strategies`]: every decision that runtimes get wrong, as a
//!   swappable seam (fixtures swap in naive ones to prove the suite catches them).
//!
//! Library (daemon) mode:
//!
//! ```no_run
//! use refbox::{BoxId, CreateOptions, Runtime, Strategies};
//! use refbox::status::Status;
//!
//! let rt = Runtime::open("/run/refbox".as_ref(), Strategies::default())?;
//! let id = BoxId::new("web-1")?;
//! let argv = vec!["sleep".to_string(), "60".to_string()];
//! rt.create(&CreateOptions { id: id.clone(), argv, env: vec![], secret: None })?;
//! rt.start(&id, None)?;
//! assert_eq!(rt.state(&id)?.status, Status::Running);
//! rt.delete(&id, true)?; // group kill through the verified pidfd, then remove
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod args;
pub mod cli;
pub mod config;
pub mod embed;
pub mod exitfile;
pub mod failpoint;
pub mod fsread;
pub mod fswrite;
pub mod helper;
pub mod identity;
pub mod ids;
pub mod layout;
pub mod pid;
pub mod reaper;
pub mod runtime;
pub mod sentinel;
pub mod shim;
pub mod signal;
pub mod state;
pub mod status;
pub mod strategy;
pub mod sys;

pub use identity::ProcessIdentity;
pub use ids::BoxId;
pub use pid::Pid;
pub use runtime::{CreateOptions, Runtime, RuntimeError};
pub use strategy::Strategies;
