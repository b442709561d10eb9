//! A real redis-server for tests (the shared launcher of `flashgate-support`), with the
//! test's way of failing: a server that cannot start or answer fails the test at once.

use flashgate_support::{RedisOptions, RedisServer as Server};

/// A redis-server child process on a free loopback port, killed on drop.
pub struct RedisServer {
    server: Server,
    /// The TLS port, when started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts one without persistence and waits until it answers PING.
    pub fn start() -> Self {
        Self::launch(RedisOptions::new("test"))
    }

    /// Starts one that writes every change to its append-only file before answering, so a
    /// SIGKILL and restart lose nothing.
    pub fn start_persistent() -> Self {
        Self::launch(RedisOptions {
            persistent: true,
            ..RedisOptions::new("test")
        })
    }

    /// Starts one that also serves TLS on a second port, with a fresh self-signed
    /// certificate for 127.0.0.1.
    pub fn start_tls() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("self-signed certificate");
        Self::launch(RedisOptions {
            tls: Some((cert.cert.pem(), cert.signing_key.serialize_pem())),
            ..RedisOptions::new("test")
        })
    }

    fn launch(options: RedisOptions) -> Self {
        let server = Server::new(options).expect("redis-server directory and ports");
        server
            .start()
            .expect("redis-server must be installed (tests/run.sh installs it)");
        Self {
            tls_port: server.tls_port(),
            server,
        }
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Kills it (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port (empty unless persistent).
    pub fn restart(&mut self) {
        self.server.kill();
        self.server.start().expect("redis-server restarts");
    }

    /// Runs a command over a fresh connection; the reply as text (see
    /// [`Server::command`]).
    pub fn command(&self, args: &[&str]) -> String {
        self.server.command(args).expect("redis-server answers")
    }

    /// Runs a command and returns the first `n` lines of the raw reply (for array replies).
    pub fn command_lines(&self, args: &[&str], n: usize) -> Vec<String> {
        self.server
            .command_lines(args, n)
            .expect("redis-server answers")
    }

    /// Stops the process (SIGSTOP): it keeps its connections and answers nothing.
    pub fn pause(&self) {
        self.server.signal("-STOP").expect("SIGSTOP redis-server");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.server.signal("-CONT").expect("SIGCONT redis-server");
    }
}
