//! The integration tests, one binary: every file here is a module, run against real
//! processes on loopback (upstreams, redis-server, the gateway binary, Prometheus,
//! Chromium). One binary links the crate once; `cargo test --test it <module>::` runs
//! one file's tests.

// Shared support first: `store_suite!` is a macro the store modules below use.
mod common;
mod redis_server;
#[macro_use]
mod store_suite;

mod adaptive_delivery;
mod admin_api;
mod architecture;
mod browser;
mod cancel;
mod client_address;
mod cluster;
mod config_cli;
mod delivery;
mod demo;
mod docs;
mod edge_costs;
mod fair_line;
mod faults;
mod fleet;
mod fleet_tickets;
mod hostile;
mod idle_connections;
mod isolation;
mod limits;
mod live_sales;
mod logs;
mod metrics;
mod monitoring;
mod pages;
mod path_normalisation;
mod prequeue;
mod proxy;
mod redis_gateway;
mod relays;
mod reload;
mod sale;
mod sale_queue;
mod shutdown;
mod stale_holds;
mod stock_cli;
mod store_memory;
mod store_redis;
mod stream_mode;
mod system_limits;
mod tls;
