//! HTTP plumbing that knows nothing about sales: the listening sockets ([`listen`]), the
//! listeners ([`server`]), the upstream
//! connection pool ([`pool`]) and where it points ([`upstream`]), request bodies ([`body`],
//! [`deadline`]) and the gateway's own answers ([`response`]).

pub mod body;
pub mod deadline;
pub mod listen;
pub mod pool;
pub mod response;
pub mod server;
pub mod upstream;

pub use body::UpstreamBody;
pub use pool::{Pool, PooledBody, UpstreamError};
pub use server::RequestBody;
pub use upstream::UpstreamTarget;
