//! doppel-harness: worlds that stage PID reuse, zombies, hostile files and
//! crashes on demand, for testing container runtimes.
//!
//! A [`World`] is a PID + mount namespace whose PID 1 is `doppel-init`;
//! everything runs inside it and nothing survives its drop. See
//! `ARCHITECTURE.md` for the modules and their dependencies.
//!
//! ```no_run
//! use doppel_harness::{Pid, World, WorldCommand, WorldOptions};
//! let world = World::open(WorldOptions::default())?;
//! let s = world.spawn_at(Pid::new(4242)?, &WorldCommand::new("sleep").arg("100"))?;
//! assert_eq!(s.pid.get(), 4242);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Finding doppel-init from other crates
//!
//! A world runs two helper programs, `doppel-init` and `doppel-impostor`
//! (binaries of this crate). [`locate`] finds them: an explicit path in
//! [`WorldOptions`] (only there: a wrong one is
//! [`locate::LocateError::ExplicitPath`]), else `$DOPPEL_INIT` / `$DOPPEL_IMPOSTOR`, else the
//! current executable if it called [`init::dispatch`] first thing in `main`,
//! else next to the current executable (or one level up from `deps/` and
//! `examples/`). Cargo builds this crate's binaries for `cargo build
//! --workspace` and for this crate's own tests, but not for *another* crate's
//! benches or tests run alone: those should call [`init::dispatch`] at the
//! top of their own `main` (`harness = false` targets), e.g.
//!
//! ```ignore
//! fn main() {
//!     doppel_harness::init::dispatch(); // may become doppel-init / the impostor
//!     benches();
//!     criterion::Criterion::default().configure_from_args().final_summary();
//! }
//! ```
//!
//! A [`World`] is `Send + Sync`: requests are serialized on its control
//! channel, one at a time.

#![warn(missing_docs)]

pub mod caps;
pub mod census;
pub mod command;
pub mod ids;
pub mod impostor;
pub mod init;
pub mod locate;
pub mod plant;
pub mod poll;
pub mod procfs;
pub mod proto;
mod sys;
pub mod world;
pub mod worldfs;

pub use caps::{Capabilities, Capability};
pub use census::Census;
pub use command::WorldCommand;
pub use ids::{Pid, Signal, StartTime};
pub use impostor::{Impostor, ImpostorError, ImpostorKind, Placement, ZombieFactory};
pub use plant::{Plant, PlantError, Planted};
pub use proto::{ExitStatus, RemoteError};
pub use world::{CrashOutcome, Exit, Spawned, World, WorldError, WorldOptions};
pub use worldfs::{PathRedirected, RedirectReason, WorldPathError};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn world_is_send_and_sync() {
        send_sync::<crate::World>();
        send_sync::<crate::Census>();
        send_sync::<crate::Impostor>();
    }
}
