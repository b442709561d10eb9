//! A real redis-server for tests: started on a free loopback port, killed on drop.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
    /// The TLS port, when started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl RedisServer {
    /// Starts one without persistence and waits until it answers PING.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Starts one that writes every change to its append-only file before answering, so a
    /// SIGKILL and restart lose nothing.
    pub fn start_persistent() -> Self {
        Self::launch(true)
    }

    /// Starts one that also serves TLS on a second port, with a fresh self-signed
    /// certificate for 127.0.0.1.
    pub fn start_tls() -> Self {
        let mut s = Self::launch_with(false, true);
        s.spawn();
        s
    }

    fn launch(persistent: bool) -> Self {
        let mut s = Self::launch_with(persistent, false);
        s.spawn();
        s
    }

    fn launch_with(persistent: bool, tls: bool) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("flashgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let tls_port = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
                .expect("self-signed certificate");
            std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("write cert");
            std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())
                .expect("write key");
            free_port()
        });
        Self {
            child: None,
            port,
            dir,
            persistent,
            tls_port,
        }
    }

    fn spawn(&mut self) {
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let mut tls: Vec<String> = Vec::new();
        if let Some(p) = self.tls_port {
            let file = |f: &str| self.dir.join(f).display().to_string();
            tls = vec![
                "--tls-port".into(),
                p.to_string(),
                "--tls-cert-file".into(),
                file("cert.pem"),
                "--tls-key-file".into(),
                file("key.pem"),
                "--tls-ca-cert-file".into(),
                file("cert.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ];
        }
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--protected-mode", "no"])
            .args(aof)
            .args(&tls)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/run.sh installs it)");
        self.child = Some(child);
        let start = Instant::now();
        while !self.answers() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty unless persistent).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs a command over a fresh connection. Returns the reply as text: a status or
    /// error line as sent (`+OK`, `-ERR …`), an integer as `:n`, a bulk string's value, or
    /// `(nil)`.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = self.send_command(args);
        let first = read_line(&mut s);
        match first.strip_prefix('$') {
            Some("-1") => "(nil)".to_owned(),
            Some(_) => read_line(&mut s),
            None => first,
        }
    }
}

impl RedisServer {
    /// Runs a command and returns the first `n` lines of the raw reply (for array replies).
    pub fn command_lines(&self, args: &[&str], n: usize) -> Vec<String> {
        let mut s = self.send_command(args);
        (0..n).map(|_| read_line(&mut s)).collect()
    }

    /// Sends one command on a fresh connection; the reply is read from the returned stream.
    fn send_command(&self, args: &[&str]) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).expect("write");
        s
    }

    /// Stops the process (SIGSTOP): it keeps its connections and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "kill {sig} redis-server");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while s.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        out.push(byte[0]);
    }
    String::from_utf8_lossy(&out).trim_end().to_owned()
}
