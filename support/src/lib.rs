//! What `tests/` and the load tester both need: a loopback port nobody listens on, and a
//! real redis-server child process on one (never the default 6379), killed when dropped.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a redis-server may take to answer its first PING.
const STARTUP: Duration = Duration::from_secs(10);

/// A loopback port nobody listens on right now.
pub fn free_port() -> io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

/// How a redis-server is started.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The `redis-server` program.
    pub program: PathBuf,
    /// Its working directory (append-only file, TLS files); removed on drop.
    pub dir: PathBuf,
    /// Write every change to the append-only file before answering (fsync always), so a
    /// SIGKILL and restart lose nothing acknowledged.
    pub persistent: bool,
    /// Also serve TLS on a second port with this certificate and key (PEM).
    pub tls: Option<(String, String)>,
    /// Where its log goes; nowhere when `None`.
    pub log: Option<PathBuf>,
    /// Run as a Redis Cluster node (its bus on a second free port); see [`RedisCluster`].
    pub cluster: bool,
}

impl RedisOptions {
    /// `redis-server` from the PATH, in a fresh directory under the system's temp dir.
    pub fn new(name: &str) -> Self {
        Self {
            program: "redis-server".into(),
            dir: std::env::temp_dir().join(format!(
                "flashgate-redis-{name}-{}-{}",
                std::process::id(),
                free_port().unwrap_or(0)
            )),
            persistent: false,
            tls: None,
            log: None,
            cluster: false,
        }
    }
}

/// A redis-server child process on 127.0.0.1.
pub struct RedisServer {
    options: RedisOptions,
    port: u16,
    tls_port: Option<u16>,
    bus_port: Option<u16>,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Prepares one on a free port (and a free TLS port when asked); nothing runs yet.
    pub fn new(options: RedisOptions) -> io::Result<Self> {
        std::fs::create_dir_all(&options.dir)?;
        let tls_port = match &options.tls {
            Some((cert, key)) => {
                std::fs::write(options.dir.join("cert.pem"), cert)?;
                std::fs::write(options.dir.join("key.pem"), key)?;
                Some(free_port()?)
            }
            None => None,
        };
        let bus_port = match options.cluster {
            true => Some(free_port()?),
            false => None,
        };
        Ok(Self {
            port: free_port()?,
            tls_port,
            bus_port,
            options,
            child: Mutex::new(None),
        })
    }

    /// Starts it (again, after [`Self::kill`]) and waits until it answers PING as itself.
    pub fn start(&self) -> Result<(), String> {
        let dir = &self.options.dir;
        let file = |f: &str| dir.join(f).display().to_string();
        let mut cmd = Command::new(&self.options.program);
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--protected-mode", "no"]);
        if self.options.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(bus) = self.bus_port {
            // A dead master must not stop the others: sales on live masters go on.
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .args(["--cluster-config-file", &file("nodes.conf")])
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-require-full-coverage", "no"]);
        }
        if let Some(p) = self.tls_port {
            cmd.args(["--tls-port", &p.to_string()])
                .args(["--tls-cert-file", &file("cert.pem")])
                .args(["--tls-key-file", &file("key.pem")])
                .args(["--tls-ca-cert-file", &file("cert.pem")])
                .args(["--tls-auth-clients", "no"]);
        }
        let log = match &self.options.log {
            Some(path) => Stdio::from(std::fs::File::create(path).map_err(|e| e.to_string())?),
            None => Stdio::null(),
        };
        let child = cmd
            .arg("--dir")
            .arg(dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.options.program.display()))?;
        *self.lock() = Some(child);
        let start = Instant::now();
        while !self.answers() {
            if start.elapsed() > STARTUP {
                self.kill();
                return Err(format!("redis-server on port {} did not start", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Something answering on the port is not enough: it must be this process.
        match self.lock().as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            _ => Err(format!(
                "redis-server could not listen on port {}",
                self.port
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when something on its port answers PING.
    pub fn answers(&self) -> bool {
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

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its TLS port, when it serves TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: no goodbye to clients) and waits for it to go.
    pub fn kill(&self) {
        if let Some(mut c) = self.lock().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the running process.
    pub fn signal(&self, sig: &str) -> Result<(), String> {
        let pid = self
            .lock()
            .as_ref()
            .map(Child::id)
            .ok_or("redis-server is not running")?;
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(())
            .ok_or_else(|| format!("kill {sig} {pid} failed"))
    }

    /// Runs a command over a fresh connection. Returns the reply as text: a status or
    /// error line as sent (`+OK`, `-ERR …`), an integer as `:n`, a bulk string's value, or
    /// `(nil)`.
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        let mut s = self.send_command(args)?;
        let first = read_line(&mut s);
        Ok(match first.strip_prefix('$') {
            Some("-1") => "(nil)".to_owned(),
            Some(_) => read_line(&mut s),
            None => first,
        })
    }

    /// Runs a command and returns the first `n` lines of the raw reply (array replies).
    pub fn command_lines(&self, args: &[&str], n: usize) -> io::Result<Vec<String>> {
        let mut s = self.send_command(args)?;
        Ok((0..n).map(|_| read_line(&mut s)).collect())
    }

    fn send_command(&self, args: &[&str]) -> io::Result<TcpStream> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        Ok(s)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.options.dir);
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

/// A Redis Cluster of `masters` cluster-enabled redis-servers on 127.0.0.1, no replicas,
/// the 16384 slots split evenly between them.
pub struct RedisCluster {
    /// Its nodes, in slot order: node `i` serves the `i`-th range.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, gives each its slots, introduces them, and waits until every node
    /// says the cluster is ok.
    pub fn start(masters: usize, program: &Path) -> Result<Self, String> {
        let mut nodes = Vec::with_capacity(masters);
        for i in 0..masters {
            let mut options = RedisOptions::new(&format!("cluster{i}"));
            options.program = program.to_path_buf();
            options.cluster = true;
            let node = RedisServer::new(options).map_err(|e| e.to_string())?;
            node.start()?;
            nodes.push(node);
        }
        let cmd = |n: &RedisServer, args: &[&str]| -> Result<String, String> {
            let reply = n.command(args).map_err(|e| e.to_string())?;
            match reply.starts_with('-') {
                true => Err(format!("{}: {reply}", args.join(" "))),
                false => Ok(reply),
            }
        };
        let per = 16384 / masters;
        for (i, n) in nodes.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == masters {
                16383
            } else {
                first + per - 1
            };
            cmd(
                n,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        for n in &nodes[1..] {
            let bus = n.bus_port.unwrap_or(0).to_string();
            cmd(
                &nodes[0],
                &["CLUSTER", "MEET", "127.0.0.1", &n.port().to_string(), &bus],
            )?;
        }
        let cluster = Self { nodes };
        cluster.wait_until_ok(&cluster.nodes.iter().collect::<Vec<_>>())?;
        Ok(cluster)
    }

    /// Waits until each of `nodes` says the cluster is ok and knows every slot's master.
    pub fn wait_until_ok(&self, nodes: &[&RedisServer]) -> Result<(), String> {
        let start = Instant::now();
        loop {
            // A bulk reply: its first line is the state.
            let ok = nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_ok_and(|l| l == "cluster_state:ok")
            });
            if ok && self.slots_known(nodes) {
                return Ok(());
            }
            if start.elapsed() > STARTUP * 3 {
                return Err("the cluster did not form".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when each of `nodes` knows every other node (it joins the cluster's view).
    fn slots_known(&self, nodes: &[&RedisServer]) -> bool {
        nodes.iter().all(|n| {
            n.command_lines(&["CLUSTER", "INFO"], 8).is_ok_and(|lines| {
                lines
                    .iter()
                    .any(|l| l == &format!("cluster_known_nodes:{}", self.nodes.len()))
            })
        })
    }

    /// Moves `slot` from node `from` to node `to` while clients keep using it, the way
    /// `redis-cli --cluster reshard` does: the target imports, the source migrates, the
    /// keys move a few at a time (clients meanwhile follow ASK redirections), then every
    /// node learns the slot's new master.
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) -> Result<(), String> {
        let cmd = |n: &RedisServer, args: &[&str]| -> Result<String, String> {
            let reply = n.command(args).map_err(|e| e.to_string())?;
            match reply.starts_with('-') {
                true => Err(format!("{}: {reply}", args.join(" "))),
                false => Ok(reply),
            }
        };
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let src_id = cmd(src, &["CLUSTER", "MYID"])?;
        let dst_id = cmd(dst, &["CLUSTER", "MYID"])?;
        let slot = slot.to_string();
        cmd(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id])?;
        cmd(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id])?;
        loop {
            // An array reply: "*n", then "$len" and the key for each.
            let head = src
                .command_lines(&["CLUSTER", "GETKEYSINSLOT", &slot, "5"], 1)
                .map_err(|e| e.to_string())?;
            let n: usize = head
                .first()
                .and_then(|h| h.strip_prefix('*'))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("GETKEYSINSLOT: {head:?}"))?;
            if n == 0 {
                break;
            }
            let lines = src
                .command_lines(&["CLUSTER", "GETKEYSINSLOT", &slot, "5"], 1 + 2 * n)
                .map_err(|e| e.to_string())?;
            let keys: Vec<&str> = lines[1..]
                .iter()
                .skip(1)
                .step_by(2)
                .map(String::as_str)
                .collect();
            let port = dst.port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            cmd(src, &args)?;
        }
        for n in &self.nodes {
            if n.answers() {
                cmd(n, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id])?;
            }
        }
        Ok(())
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The slot a key (or hash tag) maps to.
    pub fn slot_of(&self, key: &str) -> Result<u16, String> {
        let reply = self.nodes[0]
            .command(&["CLUSTER", "KEYSLOT", key])
            .map_err(|e| e.to_string())?;
        reply
            .trim_start_matches(':')
            .parse()
            .map_err(|_| format!("CLUSTER KEYSLOT {key}: {reply}"))
    }

    /// Which node (index) serves `slot`, by the initial even split.
    pub fn node_of_slot(&self, slot: u16) -> usize {
        let per = 16384 / self.nodes.len();
        (usize::from(slot) / per).min(self.nodes.len() - 1)
    }
}
