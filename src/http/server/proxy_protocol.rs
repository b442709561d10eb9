//! The PROXY protocol (v1 text, v2 binary), as HAProxy, nginx and cloud L4 balancers send
//! it: a header before the first byte of the client's own traffic that names the client's
//! address, which the balancer's TCP connection hides. Parsing is the `ppp` crate's.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest header accepted: a v2 header may carry TLVs (cloud balancers add ids, TLS
/// details); the address block itself is at most 216 bytes.
const MAX_HEADER: usize = 4096;

/// Reads and consumes the PROXY header at the start of `stream`: the client's address, or
/// None when the header says the connection is the balancer's own (v1 `UNKNOWN`, v2
/// `LOCAL`, a UNIX socket). A missing or malformed header is an error: the connection is
/// not the balancer's.
pub async fn read(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    // On the heap: only connections on a PROXY listener pay for it.
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let (len, source) = match parse(&buf[..n])? {
            Some(found) => found,
            None if n == buf.len() => return Err(invalid("PROXY header too long")),
            None => {
                // Incomplete: peek would return the same bytes at once.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        stream.read_exact(&mut buf[..len]).await?;
        return Ok(source);
    }
}

/// The header's length and source address, None while it is incomplete.
pub fn parse(bytes: &[u8]) -> io::Result<Option<(usize, Option<SocketAddr>)>> {
    let parsed = HeaderResult::parse(bytes);
    if parsed.is_incomplete() {
        return Ok(None);
    }
    let found = match parsed {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some((IpAddr::V4(a.source_address), a.source_port)),
                v1::Addresses::Tcp6(a) => Some((IpAddr::V6(a.source_address), a.source_port)),
                v1::Addresses::Unknown => None,
            };
            (h.header.len(), source)
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some((IpAddr::V4(a.source_address), a.source_port)),
                (_, v2::Addresses::IPv6(a)) => Some((IpAddr::V6(a.source_address), a.source_port)),
                (_, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
            };
            (h.header.len(), source)
        }
        HeaderResult::V1(Err(e)) => return Err(invalid(&format!("PROXY v1: {e}"))),
        HeaderResult::V2(Err(e)) => return Err(invalid(&format!("PROXY v2: {e}"))),
    };
    Ok(Some((found.0, found.1.map(SocketAddr::from))))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_name_the_client() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(v1).expect("valid"),
            Some((43, Some("203.0.113.7:51000".parse().expect("addr"))))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").expect("valid"),
            Some((15, None))
        );
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0xc3, 0x50, 1, 187,
        ]);
        v2.extend_from_slice(b"GET");
        assert_eq!(
            parse(&v2).expect("valid"),
            Some((28, Some("198.51.100.9:50000".parse().expect("addr"))))
        );
        assert_eq!(parse(b"PROXY TCP4 1.2").expect("incomplete"), None);
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse(b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n").is_err());
    }
}
