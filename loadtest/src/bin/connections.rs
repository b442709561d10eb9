//! flashgate-connections: the connection-capacity client of `bench/connections.sh`.
//!
//! `hold`: opens N keep-alive connections, sends one request on each, reads its answer and
//! then keeps every connection open and silent until stdin closes (the script measures the
//! server's memory meanwhile). `burst`: opens N connections at once, each sending one request
//! and closing after its answer, and reports how fast they were all answered. `orders`: N
//! buyers take a token each, then all order at once in wait mode, each holding its own
//! connection until its outcome; reports the answers, the most waiting at once and the
//! server's RSS meanwhile (see `orders.rs`). Loopback only.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[path = "connections/orders.rs"]
mod orders;

/// Opens many connections to one server: held idle, or in a burst.
#[derive(Debug, Parser)]
#[command(name = "flashgate-connections", about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// N keep-alive connections, one request each, then held idle until stdin closes.
    Hold(Target),
    /// N connections opened at once, one request each, closed after the answer.
    Burst(Target),
    /// N buyers take a token each, then order at once in wait mode, each holding its own
    /// connection until the outcome.
    Orders(orders::Crowd),
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The server, on loopback.
    #[arg(long)]
    addr: SocketAddr,
    /// How many connections.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// The request path (GET).
    #[arg(long, default_value = "/")]
    path: String,
    /// Connections being opened at once (hold), at most.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Gives up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = match &cli.mode {
        Mode::Hold(t) | Mode::Burst(t) => t.addr,
        Mode::Orders(c) => c.addr,
    };
    if !addr.ip().is_loopback() {
        eprintln!("{addr} is not a loopback address");
        return ExitCode::from(2);
    }
    let run = match &cli.mode {
        Mode::Hold(t) => rt.block_on(hold(t)),
        Mode::Burst(t) => rt.block_on(burst(t)),
        Mode::Orders(c) => rt.block_on(orders::run(c)),
    };
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends one GET and reads its whole answer (head and `content-length` body); returns its
/// status.
async fn exchange(stream: &mut TcpStream, path: &str, close: bool) -> io::Result<u16> {
    let connection = if close { "close" } else { "keep-alive" };
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: {connection}\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    Ok(read_answer(stream).await?.0)
}

/// Reads one whole answer (head and `content-length` body): its status and body.
async fn read_answer(stream: &mut TcpStream) -> io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            return Ok((status, buf[end + 4..end + 4 + length].to_vec()));
        }
    }
}

async fn hold(t: &Target) -> Result<(), String> {
    let deadline = Duration::from_secs(t.timeout);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(t.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(t.count);
    for _ in 0..t.count {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (addr, path) = (t.addr, t.path.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            let status = exchange(&mut s, &path, false).await?;
            drop(permit);
            Ok::<_, io::Error>((s, status))
        }));
    }
    let mut held = Vec::with_capacity(t.count);
    let mut failed = 0usize;
    for task in tasks {
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(Ok((s, status)))) if status < 500 => held.push(s),
            _ => failed += 1,
        }
    }
    println!(
        "held {} connections ({} failed) in {:.2} s",
        held.len(),
        failed,
        started.elapsed().as_secs_f64()
    );
    // The script reads the server's memory now, then closes stdin.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while tokio::time::timeout(deadline, stdin.read(&mut sink))
        .await
        .is_ok_and(|r| r.is_ok_and(|n| n > 0))
    {}
    let mut closed = 0usize;
    for mut s in held {
        // A connection the server closed while held reads 0 at once.
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::ZERO, s.read(&mut sink)).await {
            closed += 1;
        }
    }
    println!("closed by the server while held: {closed}");
    if failed > 0 {
        return Err(format!("{failed} connections were not answered"));
    }
    Ok(())
}

async fn burst(t: &Target) -> Result<(), String> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(t.count);
    for _ in 0..t.count {
        let (addr, path) = (t.addr, t.path.clone());
        tasks.push(tokio::spawn(async move {
            let begun = Instant::now();
            let mut s = TcpStream::connect(addr).await?;
            exchange(&mut s, &path, true).await?;
            Ok::<_, io::Error>(begun.elapsed())
        }));
    }
    let deadline = Duration::from_secs(t.timeout);
    let (mut answered, mut slowest, mut over_1s) = (0usize, Duration::ZERO, 0usize);
    for task in tasks {
        if let Ok(Ok(Ok(took))) = tokio::time::timeout(deadline, task).await {
            answered += 1;
            slowest = slowest.max(took);
            over_1s += usize::from(took >= Duration::from_secs(1));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "answered {answered} of {} new connections in {secs:.3} s: {:.0} connections/s, slowest {:.3} s, {over_1s} took a SYN retry (>= 1 s)",
        t.count,
        answered as f64 / secs,
        slowest.as_secs_f64()
    );
    if answered < t.count {
        return Err(format!(
            "{} connections were not answered",
            t.count - answered
        ));
    }
    Ok(())
}
