//! `server.trusted_proxies`: the balancers whose word on the client's address is believed,
//! as nginx's `set_real_ip_from` with `real_ip_recursive on`. Anyone else's
//! `X-Forwarded-For` is a claim the client wrote itself and changes nothing.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use ipnet::IpNet;

/// A list of trusted networks; empty by default (nobody is believed).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
}

impl TrustedProxies {
    /// Parses CIDR blocks (`10.0.0.0/8`) or single addresses (`192.0.2.1`); the error names
    /// the entry that is neither.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let nets = entries
            .iter()
            .map(|e| {
                let e = e.as_ref().trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{e}` is not an address or a CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { nets: nets.into() })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client behind a trusted `peer`: the rightmost `X-Forwarded-For` address that is
    /// not itself a trusted proxy (or the leftmost, when all are). None when `peer` is not
    /// trusted or names no valid address; an entry that is not an address ends the walk,
    /// since what is left of it was written by someone we cannot vouch for.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.contains(peer) {
            return None;
        }
        let mut found = None;
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Some(ip) = parse_entry(entry.trim()) else {
                break;
            };
            found = Some(ip);
            if !self.contains(ip) {
                break;
            }
        }
        found
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(e: &str) -> Option<IpAddr> {
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    e.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_the_rightmost_untrusted_entry_wins() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.1"]).expect("valid");
        let h = xff(&["6.6.6.6, 203.0.113.5", "10.1.1.1"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), Some(ip("203.0.113.5")));
        assert_eq!(t.client(ip("198.51.100.1"), &h), None, "untrusted peer");
        assert_eq!(t.client(ip("::ffff:10.0.0.2"), &h), Some(ip("203.0.113.5")));
        // All trusted: the leftmost; garbage ends the walk.
        assert_eq!(
            t.client(ip("192.0.2.1"), &xff(&["10.0.0.9, 10.0.0.8"])),
            Some(ip("10.0.0.9"))
        );
        assert_eq!(
            t.client(ip("192.0.2.1"), &xff(&["1.1.1.1, bogus, 10.0.0.8"])),
            Some(ip("10.0.0.8"))
        );
        assert_eq!(
            t.client(ip("192.0.2.1"), &xff(&["[2001:db8::1]:443"])),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(t.client(ip("192.0.2.1"), &HeaderMap::new()), None);
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["lb.internal"]).is_err());
    }
}
