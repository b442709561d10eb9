//! flashgate: a reverse proxy that turns a flash-sale crowd into a steady, bounded stream of
//! orders. See `README.md` for running it and `DESIGN.md` for the contract.
//!
//! Module map, in the order a request meets them:
//! - [`server`]: accept, connection limit, HTTP/1.1 or h2c, header timeout, graceful shutdown.
//! - [`gateway`]: binds the listeners and routes each request: sale route or proxy.
//! - [`sale_api`]: the sale routes; [`identity`] and [`ratelimit`] guard them.
//! - [`admission`]: the in-process admit-or-refuse decision.
//! - [`sale`], [`queue`], [`ticket`]: a sale's state, its bounded FIFO queue, the tickets.
//! - [`drain`]: releases queued requests at the drain rate to the order workers.
//! - [`store`]: the atomic store steps (memory implementation).
//! - [`delivery`]: hands reserved orders to the backend, or puts the stock back.
//! - [`engine`]: what the sale path shares, and its background tasks.
//! - [`proxy`]: forwards everything that is not a sale route to the upstream.
//! - [`admin`]: `/healthz` and `/readyz` on the admin listener; [`admin_api`] under `/admin/`.
//! - [`demo`]: the demo backend behind `flashgate demo`.
//! - [`metrics`]: Prometheus metrics at `/metrics` on the admin listener.
//! - [`config`], [`types`], [`error`], [`response`], [`logging`], [`signal`], [`cli`]: the
//!   supporting cast.

#![warn(missing_docs)]

pub mod admin;
pub mod admin_api;
pub mod admission;
pub mod body;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod drain;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod local_state;
pub mod logging;
pub mod metrics;
pub mod order_body;
pub mod pages;
pub mod path;
pub mod proxy;
pub mod queue;
pub mod ratelimit;
pub mod response;
pub mod sale;
pub mod sale_api;
pub mod server;
pub mod signal;
pub mod signature;
pub mod store;
pub mod ticket;
pub mod trusted_proxies;
pub mod types;

pub use config::Config;
pub use gateway::Gateway;
