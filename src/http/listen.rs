//! Opening a listening socket with a backlog a crowd fits in: the kernel's accept queue
//! holds the connections that finished their handshake and wait for `accept`; when it is
//! full the kernel drops their SYNs and each of those clients waits 1 s, then 3 s, for its
//! retry. nginx asks for 511; the system's own cap (`net.core.somaxconn`) is the most any
//! listen call gets, so that is the default here.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

use crate::system_limits::somaxconn;

/// The backlog asked for when the system's cap cannot be read (not Linux, no `/proc`).
const FALLBACK_BACKLOG: u32 = 4096;

/// The backlog a listener gets: `configured`, or by default the system's cap.
pub fn backlog(configured: Option<u32>) -> u32 {
    configured.unwrap_or_else(|| somaxconn().unwrap_or(FALLBACK_BACKLOG))
}

/// Binds `addr` (with `SO_REUSEADDR`, as a restart must not wait out `TIME_WAIT`) and
/// listens with `backlog`.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_backlog_is_kept_and_the_default_is_the_systems_cap() {
        assert_eq!(backlog(Some(77)), 77);
        assert_eq!(backlog(None), somaxconn().unwrap_or(FALLBACK_BACKLOG));
    }

    #[tokio::test]
    async fn the_listener_accepts_on_the_address_it_was_given() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 16).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (client, (_, peer)) = (client.expect("connect"), accepted.expect("accept"));
        assert_eq!(client.local_addr().expect("local"), peer);
    }
}
