//! Helpers shared by the integration tests that run members in process.

pub mod group;
