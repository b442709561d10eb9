//! What a valid config leaves open that an operator should know of: not errors, but
//! choices `check-config` and the start-up log point out.

use super::Config;

/// What a valid config leaves open that an operator should know of; `check-config` prints
/// these as warnings.
pub fn of(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if c.delivery.mode == crate::config::DeliveryMode::Http && c.delivery.signing_secret.is_empty()
    {
        out.push(
            "delivery.signing_secret is empty: orders are delivered over the same upstream the \
             proxy forwards clients to, and only the path guard keeps clients off the intake; \
             set a secret and verify Flashgate-Signature in the backend (docs/sale-path.md: signed deliveries)"
                .to_owned(),
        );
    }
    if c.server.proxy_protocol && c.server.trusted_proxies.is_empty() {
        out.push(
            "server.proxy_protocol is on and server.trusted_proxies is empty: any peer that \
             reaches the listener may name any client address"
                .to_owned(),
        );
    }
    out
}
