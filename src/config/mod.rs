//! Configuration: one TOML file, every key overridable by `--set key=value` or a
//! `FLASHGATE_SECTION_KEY` environment variable, validated before anything starts.
//!
//! Loading runs in three steps so that every error can name the key it is about:
//! the file is parsed into a TOML table, overrides are written into that table, and
//! the table is deserialised (with the failing key's path tracked) and validated.

mod auto;
mod error;
mod load;
mod overrides;
mod redact;
mod schema;
mod store_delivery;
mod timestamp;
mod validate;
mod warnings;

pub use auto::{AutoOr, DrainRate, InFlight};
pub use error::ConfigError;
pub use overrides::{env_overrides, Override};
pub use redact::redact_url;
pub use schema::*;
pub use store_delivery::*;
pub use timestamp::Timestamp;
pub use validate::check_sale;
