//! `flashgate demo` in a child process: the addresses its banner prints, the rest of its
//! output for the test to read, killed if the test fails first ([`Process`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use super::process::Process;

/// A running `flashgate demo` and what its banner printed.
pub struct Demo {
    process: Process,
    /// Its standard output after the banner.
    pub rest: std::io::Lines<BufReader<std::process::ChildStdout>>,
    /// The gateway's public address.
    pub gateway: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The demo backend.
    pub backend: SocketAddr,
    /// The sale page's address as printed (`http://…/sale/{sku}/wait`).
    pub page: String,
}

/// Starts `flashgate demo` with every listener on a free loopback port, warnings only in
/// its log, and `args` after those; returns once its banner is printed.
pub fn spawn_demo(args: &[&str]) -> Demo {
    let mut process = Process(
        Command::new(env!("CARGO_BIN_EXE_flashgate"))
            .args(["demo", "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--backend-listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn flashgate demo"),
    );
    let stdout = process.0.stdout.take().expect("stdout");
    let mut rest = BufReader::new(stdout).lines();
    let (mut gateway, mut admin, mut backend, mut page) = (None, None, None, None);
    loop {
        let line = rest.next().expect("the demo exited early").expect("read");
        let words: Vec<&str> = line.split_whitespace().collect();
        let url = |w: &str| w.strip_prefix("http://").map(str::to_owned);
        let addr = |w: &str| url(w).and_then(|a| a.split('/').next()?.parse().ok());
        match words.as_slice() {
            ["gateway", gw, "(admin", adm, ..] => {
                gateway = addr(gw);
                admin = addr(adm);
            }
            ["backend", b, ..] => backend = addr(b),
            [p, ..] if p.starts_with("http://") && p.ends_with("/wait") => {
                page = Some((*p).to_owned());
            }
            ["Ctrl-C", ..] => break,
            _ => {}
        }
    }
    Demo {
        process,
        rest,
        gateway: gateway.expect("the banner's gateway line"),
        admin: admin.expect("the banner's admin address"),
        backend: backend.expect("the banner's backend line"),
        page: page.expect("the banner's sale page"),
    }
}

impl Demo {
    /// Sends `signal` to the process.
    pub fn signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    /// Waits for the process to exit ([`Demo::rest`] stays readable).
    pub async fn exit(&mut self) -> std::process::ExitStatus {
        self.process.exit().await
    }
}
