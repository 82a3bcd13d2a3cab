//! `dledger-operator`: turns `DLedgerGroup` resources into running,
//! self-reporting replica groups (DESIGN.md, "The `DLedgerGroup` resource").
//!
//! [`crd`] holds the resource types; [`specs`] builds the children as pure
//! functions; [`controller`] decides and applies; [`rbac`] is the one table of
//! rights the operator needs; [`lease`], [`metrics`] and [`server`] are the
//! process around it; [`upgrade`] plans rolling upgrades; [`membership`] plans scaling; [`plugin`] is
//! `kubectl dledger`.

#![deny(missing_docs)]

pub mod controller;
pub mod crd;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod plugin;
pub mod rbac;
pub mod server;
pub mod specs;
pub mod upgrade;
