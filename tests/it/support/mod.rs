//! Helpers shared by the integration tests.

pub mod infra;
pub mod moto;
