//! Helpers shared by the integration tests.

pub mod aws;
pub mod fault_proxy;
pub mod infra;
pub mod moto;
