//! Tessera's PostgreSQL wire-protocol server.

mod cancel;
mod connection;
mod corked;
pub mod demo;
pub mod errors;
pub mod handler;
pub mod pgcompat;
pub mod server;
pub mod users;

pub use server::{serve, ServerOptions};
