//! flashgate: a reverse proxy that turns a flash-sale crowd into a steady, bounded stream of
//! orders. See `README.md` for running it and `DESIGN.md` for the contract.
//!
//! Module map, in the order a request meets them:
//! - [`server`]: accept, connection limit, HTTP/1.1 or h2c, header timeout, graceful shutdown.
//! - [`gateway`]: binds the listeners and routes each request.
//! - [`proxy`]: forwards everything that is not a sale route to the upstream.
//! - [`admin`]: `/healthz` and `/readyz` on the admin listener.
//! - [`config`], [`error`], [`response`], [`logging`], [`signal`], [`cli`]: the supporting cast.

#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod error;
pub mod gateway;
pub mod logging;
pub mod proxy;
pub mod response;
pub mod server;
pub mod signal;

pub use config::Config;
pub use gateway::Gateway;
pub mod store;
pub mod types;
pub mod queue;
pub mod ratelimit;
pub mod ticket;
