//! Cases of the catalog whose scenes arrive with a later stage of the suite
//! (daemon mode). They are listed so that reports show them; for an adapter
//! without the capability they are not applicable, and for one that
//! declares it they are honestly not staged, never passed.

use crate::catalog::{NotStaged, Verdict};
use crate::scene::Scene;

pub(crate) fn not_in_this_suite(_: &mut Scene<'_>) -> Verdict {
    Err(NotStaged(
        "this version of the suite cannot stage this scene yet (daemon scenes are planned)".into(),
    ))
}
