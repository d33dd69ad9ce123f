//! spotpool: one isolated agent gateway per user, on a warm pool of EC2 spot instances.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod cloud;
pub mod model;
