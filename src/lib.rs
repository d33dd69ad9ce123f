//! spotpool: one isolated agent gateway per user, on a warm pool of EC2 spot instances.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod api;
pub mod app;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod image;
pub mod instance_scripts;
pub mod interruption_feed;
pub mod leader;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod store;
pub mod tls;
pub mod url;
pub mod vault;
pub mod webhook;
