//! The `orders` mode: a crowd held in wait mode. N buyers take a token each (on a few
//! keep-alive connections), then every buyer orders at once on a connection of its own and
//! holds it until the outcome: 201 reserved, 202 not decided within `max_wait`, or 410 sold
//! out. Anything else (a queue full, a rate limit, a connection refused or reset) is a buyer
//! the server could not hold, and fails the run. Meanwhile the server's RSS is sampled, so
//! the memory a waiting request costs can be read off: (peak − before) / most waiting.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::read_answer;

/// Who orders, and where.
#[derive(Debug, clap::Args)]
pub struct Crowd {
    /// The gateway, on loopback.
    #[arg(long)]
    pub addr: SocketAddr,
    /// How many buyers, each on a connection of its own.
    #[arg(long, default_value_t = 15_000)]
    count: usize,
    /// The sale.
    #[arg(long, default_value = "phone")]
    sku: String,
    /// The gateway's identity header.
    #[arg(long, default_value = "x-user-id")]
    user_header: String,
    /// The gateway's process id: its RSS is sampled while the crowd waits.
    #[arg(long)]
    pid: u32,
    /// Connections being opened at once, at most (the rest wait their turn to connect).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Gives up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// The answers, counted by what they mean.
#[derive(Debug, Default)]
struct Answers {
    reserved: usize,
    past_max_wait: usize,
    sold_out: usize,
    other: Vec<String>,
}

/// Takes the tokens, sends the crowd, prints what it saw; an error when any buyer got
/// anything but an outcome.
pub async fn run(c: &Crowd) -> Result<(), String> {
    let deadline = Duration::from_secs(c.timeout);
    let tokens = tokio::time::timeout(deadline, tokens(c))
        .await
        .map_err(|_| format!("the tokens were not all issued within {} s", c.timeout))??;
    let before = rss_kb(c.pid)?;
    let peak_rss = Arc::new(AtomicU64::new(before));
    let waiting = Arc::new(AtomicUsize::new(0));
    let most_waiting = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn(sample(c.pid, peak_rss.clone()));

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(c.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.into_iter().enumerate() {
        let head = format!(
            "POST /sale/{}/order HTTP/1.1\r\nHost: bench\r\n{}: buyer-{i}\r\nX-Sale-Token: {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            c.sku, c.user_header
        );
        let (gate, waiting, most) = (gate.clone(), waiting.clone(), most_waiting.clone());
        let addr = c.addr;
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            s.write_all(head.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            drop(permit);
            let now = waiting.fetch_add(1, Ordering::Relaxed) + 1;
            most.fetch_max(now, Ordering::Relaxed);
            let answer = read_answer(&mut s).await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            answer.map_err(|e| e.to_string())
        }));
    }
    let mut answers = Answers::default();
    for task in tasks {
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(Ok((201, _)))) => answers.reserved += 1,
            Ok(Ok(Ok((202, _)))) => answers.past_max_wait += 1,
            Ok(Ok(Ok((410, body)))) if String::from_utf8_lossy(&body).contains("sold_out") => {
                answers.sold_out += 1
            }
            Ok(Ok(Ok((status, body)))) => answers
                .other
                .push(format!("{status} {}", String::from_utf8_lossy(&body))),
            Ok(Ok(Err(e))) => answers.other.push(e),
            Ok(Err(e)) => answers.other.push(e.to_string()),
            Err(_) => answers.other.push("no answer in time".into()),
        }
    }
    let took = started.elapsed().as_secs_f64();
    sampler.abort();
    let peak = peak_rss.load(Ordering::Relaxed).max(rss_kb(c.pid)?);
    let most = most_waiting.load(Ordering::Relaxed);
    let Answers {
        reserved,
        past_max_wait,
        sold_out,
        other,
    } = &answers;
    println!(
        "answered {} of {} buyers in {took:.2} s: {reserved} reserved (201), {past_max_wait} past max_wait (202), {sold_out} sold out (410), {} otherwise",
        reserved + past_max_wait + sold_out,
        c.count,
        other.len()
    );
    let per = (peak.saturating_sub(before) * 1024) as f64 / most.max(1) as f64;
    println!(
        "most waiting at once: {most}; server RSS {before} kB before, {peak} kB at the peak: {per:.0} B per waiting request"
    );
    if let Some(first) = other.first() {
        return Err(format!(
            "{} buyers were not answered with an outcome; the first: {first}",
            other.len()
        ));
    }
    Ok(())
}

/// One token a buyer, taken on a few keep-alive connections side by side.
async fn tokens(c: &Crowd) -> Result<Vec<String>, String> {
    const CONNECTIONS: usize = 32;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS.min(c.count) {
        let (next, addr, count) = (next.clone(), c.addr, c.count);
        let (sku, header) = (c.sku.clone(), c.user_header.clone());
        workers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, String>(got);
                }
                let req = format!(
                    "POST /sale/{sku}/token HTTP/1.1\r\nHost: bench\r\n{header}: buyer-{i}\r\nContent-Length: 0\r\n\r\n"
                );
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let (status, body) = read_answer(&mut s).await.map_err(|e| e.to_string())?;
                let token = (status == 200)
                    .then(|| serde_json::from_slice::<Token>(&body).ok())
                    .flatten()
                    .ok_or_else(|| {
                        format!(
                            "no token for buyer-{i}: {status} {}",
                            String::from_utf8_lossy(&body)
                        )
                    })?;
                got.push((i, token.token));
            }
        }));
    }
    let mut tokens = vec![String::new(); c.count];
    for w in workers {
        for (i, t) in w.await.map_err(|e| e.to_string())?? {
            tokens[i] = t;
        }
    }
    Ok(tokens)
}

/// The token route's answer.
#[derive(serde::Deserialize)]
struct Token {
    token: String,
}

/// Keeps the highest RSS seen, every 10 ms, until aborted.
async fn sample(pid: u32, peak: Arc<AtomicU64>) {
    let mut every = tokio::time::interval(Duration::from_millis(10));
    loop {
        every.tick().await;
        if let Ok(kb) = rss_kb(pid) {
            peak.fetch_max(kb, Ordering::Relaxed);
        }
    }
}

/// A process's resident memory, in kB.
fn rss_kb(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read process {pid}'s status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in process {pid}'s status"))
}
