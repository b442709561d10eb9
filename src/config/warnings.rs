//! What a valid config leaves open that an operator should know of: not errors, but
//! choices `check-config` and the start-up log point out.

use super::Config;

/// Descriptors kept for what is not a connection: the runtime, logs, the config file,
/// the data directory, the demo backend.
const OTHER_FILES: u64 = 64;

/// Open files the config may need at once: every connection its caps allow, both
/// listeners, the upstream and store pools, and a few for the rest.
fn open_files_needed(c: &Config) -> u64 {
    [
        c.server.max_connections,
        c.admin.max_connections,
        c.upstream.max_connections,
        c.store.pool_size,
    ]
    .iter()
    .map(|&n| n as u64)
    .fold(OTHER_FILES, u64::saturating_add)
}

/// A warning when the connections the config allows cannot all be open under an
/// open-files `limit`: past it, `accept` fails and the caps are never reached.
pub fn open_files(c: &Config, limit: u64) -> Option<String> {
    let need = open_files_needed(c);
    (need > limit).then(|| {
        format!(
            "server.max_connections ({}) + admin.max_connections ({}) + upstream.max_connections ({}) \
             + store.pool_size ({}) need about {need} open files, and this process may open {limit} \
             (RLIMIT_NOFILE, hard limit): raise it (systemd: LimitNOFILE=; a shell: ulimit -Hn) or lower those keys",
            c.server.max_connections,
            c.admin.max_connections,
            c.upstream.max_connections,
            c.store.pool_size,
        )
    })
}

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
    if let Ok(limit) = crate::system_limits::open_files() {
        // `serve` raises its soft limit to the hard one first.
        out.extend(open_files(c, limit.hard));
    }
    if let (Some(asked), Some(cap)) = (c.server.backlog, crate::system_limits::somaxconn()) {
        if asked > cap {
            out.push(format!(
                "server.backlog = {asked} is above this system's net.core.somaxconn ({cap}): \
                 the kernel queues at most {cap}; raise the sysctl to get more"
            ));
        }
    }
    out
}
