//! spotpool: one isolated agent gateway per user, on a warm pool of EC2 spot instances.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod api;
pub mod cloud;
pub mod commands;
pub mod config;
pub mod interruptions;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod store;
pub mod vault;
