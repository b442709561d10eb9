//! A child process that a failed test cannot leave behind.

use super::client::guarded;

/// A child process, killed and reaped when dropped.
pub struct Process(pub std::process::Child);

impl Process {
    /// Sends `signal` to the process (and, if it leads a process group, to the processes
    /// of that group: a wrapper such as `faketime` and the program it runs).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits");
        // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(-pid, signal) };
        if rc != 0 {
            // SAFETY: as above.
            let rc = unsafe { libc::kill(pid, signal) };
            assert_eq!(rc, 0, "kill failed");
        }
    }

    /// Waits for the process to exit. Polled: a blocking wait in a blocking task would keep
    /// the test's runtime (and so the test) alive for ever if the process never exits.
    pub async fn exit(&mut self) -> std::process::ExitStatus {
        let child = &mut self.0;
        guarded("the process to exit", async {
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    return status;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Its group first: a wrapper killed alone leaves the program it runs behind (a
        // `faketime` child kept serving after every test run). No group: nothing happens.
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) on a process group we created; no memory effects.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        // Harmless once it has exited: the status is kept.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether any process on this machine runs with `fragment` in its command line.
pub fn running_with(fragment: &str) -> bool {
    let Ok(all) = std::fs::read_dir("/proc") else {
        return false;
    };
    all.flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(fragment))
            .unwrap_or(false)
    })
}
