//! flashgate: a reverse proxy that turns a flash-sale crowd into a steady, bounded stream of
//! orders. See `README.md` for running it and `docs/contract.md` for the contract.
//!
//! The modules sit in layers, lowest first. A module uses only modules of its own layer
//! or below, and no modules (or files) import each other in a circle;
//! `tests/it/architecture.rs` holds the code to this table, and `docs/layout.md` to it.
//! - L0 foundations: [`types`], [`error`], [`metrics`], [`ratelimit`], [`signal`], [`path`],
//!   [`signature`], [`trusted_proxies`], [`breaker`], [`token`] (signed sale tokens),
//!   [`log_throttle`] (warnings that fire in bursts, one line a minute), [`version`]
//!   (version, commit), [`system_limits`] (the listen backlog's cap, the open-files limit)
//! - L1 config and HTTP plumbing that knows nothing of sales: [`config`], [`http`] (the
//!   listeners, the upstream pool, bodies, the gateway's own answers)
//! - L2 components: [`store`] (the atomic store steps), [`local_state`], [`identity`],
//!   [`pages`], [`proxy`] (everything that is not a sale route), [`logging`], [`cluster`]
//!   (this instance among those sharing the store, and asking the others)
//! - L3 the sale: [`sale`] (its state, bounded FIFO queue, tickets, the admission decision,
//!   the order protocol, token holds, ticket lookup, the context the sale path shares, and
//!   the drain)
//! - L4 what uses the sale: [`delivery`] (hands reserved orders to the backend),
//!   [`sale_api`] (the public sale routes), [`admin`] (the admin listener: probes,
//!   `/metrics`, the admin API), [`demo`] (the demo backend and its cookie identities)
//! - L5 the composition root: [`gateway`] (builds every component once, binds, starts
//!   the background tasks)
//! - L6 the entry: [`cli`]

#![warn(missing_docs)]
// The layer table above names every module, the crate-internal ones too: it is for the
// people working on the crate (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

pub(crate) mod admin;
pub(crate) mod breaker;
pub mod cli;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod delivery;
pub mod demo;
pub mod error;
pub mod gateway;
pub(crate) mod http;
pub mod identity;
pub(crate) mod local_state;
pub(crate) mod log_throttle;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod pages;
pub mod path;
pub mod proxy;
pub(crate) mod ratelimit;
pub mod sale;
pub mod sale_api;
pub(crate) mod signal;
pub(crate) mod signature;
pub mod store;
pub(crate) mod system_limits;
pub mod token;
pub(crate) mod trusted_proxies;
pub mod types;
pub mod version;

pub use config::Config;
pub use gateway::Gateway;
