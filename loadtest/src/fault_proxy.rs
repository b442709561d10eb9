//! A TCP proxy that breaks the link it stands on, on demand: between a gateway and Redis, or
//! between a gateway and the backend. The faults are those a network and a busy server
//! produce every day, at the level the gateway sees them (bytes on a connection), so every
//! client library and timeout on the path is tested as it really runs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the link does to the bytes on it right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass.
    Pass,
    /// Every chunk waits this long before it is passed on, both ways.
    Delay(Duration),
    /// Bytes are held, both ways, until the fault ends (a stalled network or server).
    Pause,
    /// Requests reach the server, its replies are held until the fault ends: the step ran,
    /// its answer is late or, if the client gives up first, lost.
    HoldReplies,
    /// Bytes are dropped, both ways; connections stay open (a black hole).
    Blackhole,
    /// Every connection is reset, and new ones are reset as they arrive.
    Reset,
}

impl Fault {
    /// A short name for logs and reports.
    pub fn name(&self) -> String {
        match self {
            Self::Pass => "pass".into(),
            Self::Delay(d) => format!("delay {}ms", d.as_millis()),
            Self::Pause => "pause".into(),
            Self::HoldReplies => "hold replies".into(),
            Self::Blackhole => "blackhole".into(),
            Self::Reset => "reset".into(),
        }
    }
}

/// A running fault proxy.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
}

/// Which way bytes flow on a proxied connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    ToServer,
    ToClient,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target` until `stop`.
    pub async fn start(target: SocketAddr, stop: CancellationToken) -> Result<Self, String> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("fault proxy: cannot listen: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("fault proxy: {e}"))?;
        let (fault, watching) = watch::channel(Fault::Pass);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = stop.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let fault = watching.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    if *fault.borrow() == Fault::Reset {
                        reset(client);
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else {
                        reset(client);
                        return;
                    };
                    relay(client, server, fault, stop).await;
                });
            }
        });
        Ok(Self { addr, fault })
    }

    /// Puts `fault` on the link (replacing the one on it).
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

/// Closes a connection with a reset rather than a clean end.
fn reset(stream: TcpStream) {
    // Zero linger: the close sends RST at once (and never blocks).
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Pumps both ways until either side closes, the link resets, or the run stops.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    fault: watch::Receiver<Fault>,
    stop: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Set before splitting: a reset must send RST on both sockets when the halves drop.
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut resets = fault.clone();
    let up = pump(client_read, server_write, fault.clone(), Way::ToServer);
    let down = pump(server_read, client_write, fault, Way::ToClient);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = resets.wait_for(|f| *f == Fault::Reset) => {}
        () = stop.cancelled() => {}
    }
}

/// Copies `from` to `to`, applying the link's fault to each chunk.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    way: Way,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            let now = *fault.borrow_and_update();
            match now {
                Fault::Pass => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::HoldReplies if way == Way::ToServer => break,
                Fault::Pause | Fault::HoldReplies => {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
                Fault::Blackhole => break,
                Fault::Reset => return,
            }
        }
        if *fault.borrow() == Fault::Blackhole {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn faults_hold_drop_and_reset_the_link() {
        let stop = CancellationToken::new();
        let proxy = FaultProxy::start(echo().await, stop.clone())
            .await
            .expect("proxy");
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(roundtrip(&mut s, b"one").await.expect("pass"), b"one");

        // Replies held: the echo server got the bytes, the answer comes when the fault ends.
        proxy.set(Fault::HoldReplies);
        s.write_all(b"two").await.expect("write");
        let mut got = [0u8; 3];
        let early = tokio::time::timeout(Duration::from_millis(50), s.read_exact(&mut got)).await;
        assert!(early.is_err(), "a held reply does not arrive");
        proxy.set(Fault::Pass);
        s.read_exact(&mut got).await.expect("released");
        assert_eq!(&got, b"two");

        // Blackholed bytes are gone for good.
        proxy.set(Fault::Blackhole);
        s.write_all(b"lost").await.expect("write");
        let gone = tokio::time::timeout(Duration::from_millis(50), s.read_exact(&mut got)).await;
        assert!(gone.is_err(), "a blackholed request is never answered");
        proxy.set(Fault::Pass);
        assert_eq!(roundtrip(&mut s, b"three").await.expect("pass"), b"three");

        // A reset ends the connection, and new ones too while it lasts.
        proxy.set(Fault::Reset);
        let mut rest = Vec::new();
        let ended = s.read_to_end(&mut rest).await;
        assert!(ended.is_err() || rest.is_empty(), "the connection ended");
        let mut fresh = TcpStream::connect(proxy.addr).await.expect("connect");
        assert!(roundtrip(&mut fresh, b"x").await.is_err(), "reset at once");
        proxy.set(Fault::Pass);
        let mut after = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(roundtrip(&mut after, b"four").await.expect("pass"), b"four");
        stop.cancel();
    }
}
