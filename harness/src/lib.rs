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

pub mod caps;
pub mod census;
pub mod command;
pub mod ids;
pub mod impostor;
pub mod init;
pub mod locate;
pub mod plant;
pub mod procfs;
pub mod proto;
mod sys;
pub mod world;

pub use caps::{Capabilities, Capability};
pub use census::Census;
pub use command::WorldCommand;
pub use ids::{Pid, Signal, StartTime};
pub use impostor::{Impostor, ImpostorError, ImpostorKind, Placement, ZombieFactory};
pub use plant::{Plant, PlantError, Planted};
pub use proto::{ExitStatus, RemoteError};
pub use world::{CrashOutcome, Exit, Spawned, World, WorldError, WorldOptions};
