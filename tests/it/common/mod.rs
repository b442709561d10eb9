//! Shared test support: a real upstream on a loopback port ([`upstream`]), small HTTP
//! clients ([`client`]), a gateway in process and the sale calls tests make ([`sale`]),
//! the real binary ([`binary`], [`demo`]) as a child [`process`], and an order backend of
//! known capacity ([`capacity`]).
//! Everything binds 127.0.0.1 on port 0.

pub mod binary;
pub mod capacity;
pub mod client;
pub mod demo;
pub mod process;
pub mod sale;
pub mod upstream;

// Every test module takes what it needs from one flat namespace.
#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use demo::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use sale::*;
#[allow(unused_imports)]
pub use upstream::*;
