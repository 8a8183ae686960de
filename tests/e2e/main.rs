//! End-to-end tests: one binary, one module per area.

mod api;
mod build;
mod child;
mod crash;
mod identity_model;
mod profiles_model;
mod slt;
mod storage_model;
mod wire;
