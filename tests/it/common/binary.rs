//! The real binary in a child process: its listeners' addresses read from its JSON log,
//! every later log line kept for the test to search, killed if the test fails first
//! ([`Process`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use super::process::Process;

/// The real binary, its listeners' addresses (read from its JSON log), and every log line
/// it writes from then on.
pub struct Binary {
    process: Process,
    /// The public listener.
    pub public: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    /// Sends `signal` to the process.
    pub fn signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    /// True once a log line containing `message` was written.
    pub fn logged(&self, message: &str) -> bool {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .any(|l| l.contains(message))
    }

    /// The log lines written since it listened, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.log_handle().lines()
    }

    /// The log, readable after the process is gone.
    pub fn log_handle(&self) -> Log {
        Log(self.log.clone())
    }

    /// Waits for the process to exit.
    pub async fn exit(mut self) -> std::process::ExitStatus {
        self.process.exit().await
    }
}

/// Starts `flashgate serve --config config` with JSON logs.
pub fn spawn_logged(config: &std::path::Path) -> Binary {
    spawn_logged_behind(config, 0)
}

/// Starts it as [`spawn_logged`] does, its clock `secs` seconds behind the machine's
/// (under libfaketime, which the test command installs): an instance of a fleet whose
/// clock lags.
pub fn spawn_logged_behind(config: &std::path::Path, secs: u32) -> Binary {
    launch(config, Launch::Behind(secs))
}

/// Starts it as [`spawn_logged`] does, under an open-files limit (soft and hard) of
/// `limit`, as `ulimit -n` sets it in the shell that starts it.
pub fn spawn_logged_with_open_files(config: &std::path::Path, limit: u64) -> Binary {
    launch(config, Launch::OpenFiles(limit))
}

/// How the binary is started.
enum Launch {
    /// Its clock this many seconds behind the machine's (0: the machine's).
    Behind(u32),
    /// Under this open-files limit.
    OpenFiles(u64),
}

fn launch(config: &std::path::Path, how: Launch) -> Binary {
    let (process, lines, public, admin, early) = start(config, how);
    let log = std::sync::Arc::new(std::sync::Mutex::new(early));
    let kept = log.clone();
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().expect("log lock").push(line);
        }
    });
    Binary {
        process,
        public,
        admin,
        log,
    }
}

/// Starts it as [`spawn_logged`] does, then closes its log pipe (a log reader that went
/// away): every later line it writes fails.
pub fn spawn_then_close_log(config: &std::path::Path) -> Binary {
    let (process, lines, public, admin, _) = start(config, Launch::Behind(0));
    drop(lines);
    Binary {
        process,
        public,
        admin,
        log: Default::default(),
    }
}

/// Spawns the binary as `how` says and reads its log until it listens: the child, the
/// rest of its log, the public and admin addresses, and the lines written until then.
fn start(
    config: &std::path::Path,
    how: Launch,
) -> (
    Process,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
    SocketAddr,
    SocketAddr,
    Vec<String>,
) {
    let binary = env!("CARGO_BIN_EXE_flashgate");
    let mut command = match how {
        Launch::Behind(0) => Command::new(binary),
        Launch::Behind(secs) => {
            let mut c = Command::new("faketime");
            c.args(["-f", &format!("-{secs}s"), binary]);
            c
        }
        Launch::OpenFiles(limit) => {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                binary,
            ]);
            c
        }
    };
    // Its own process group, so that a wrapper and the program it runs go together.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut process = Process(
        command
            .args(["serve", "--config"])
            .arg(config)
            .args(["--log-format", "json"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn flashgate"),
    );
    let stderr = process.0.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut early = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("flashgate exited before listening")
            .expect("read log");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log lines are JSON ({e}): {line}"));
        if v["message"] == "flashgate listening" {
            let addr = |key: &str| {
                v[key]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .expect("an address field")
            };
            early.push(line);
            return (
                process,
                lines,
                addr("public_addr"),
                addr("admin_addr"),
                early,
            );
        }
        early.push(line);
    }
}

/// A config file in a fresh directory (removed by the caller).
pub fn config_file(name: &str, text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("flashgate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("gw.toml");
    std::fs::write(&cfg, text).expect("write config");
    (dir, cfg)
}

/// A process's log lines, kept by the thread that reads its stderr.
pub struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    /// The lines so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .expect("log lock")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
