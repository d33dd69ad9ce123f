//! The integration tests: one binary, with shared helpers.

mod reconcile;
mod world;
