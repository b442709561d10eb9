//! The operator's signals: SIGTERM/SIGINT stop the gateway, SIGHUP never does.

/// Ignores SIGHUP from now until [`Terminations::watch`] takes it over: a SIGHUP sent while
/// the process is still reading its config and starting (a reload script racing a start)
/// must not stop it. Call first thing in a serving command.
pub fn ignore_hangups_while_starting() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN before any thread is started has no
    // memory effects; the runtime's handler replaces it later.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// The operator's stop signals, watched from the moment [`Terminations::watch`] is called:
/// a SIGTERM that arrives while the gateway is still starting is kept, not fatal. SIGHUP
/// is taken over at the same moment, so that it never stops the process.
pub struct Terminations {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Terminations {
    /// Starts watching SIGTERM and SIGINT (and takes SIGHUP's default action away); call
    /// inside a tokio runtime, before anything slow.
    pub fn watch() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            // Once a kind is registered, its default action is gone for the process's life:
            // a SIGHUP before the reload task waits on it is ignored rather than fatal.
            if let Err(e) = signal(SignalKind::hangup()) {
                tracing::warn!(error = %e, "cannot watch SIGHUP");
            }
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT; falling back to Ctrl-C");
                    None
                }
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Calls `stop` on every SIGTERM or SIGINT, for as long as the process runs: the first
    /// begins a graceful stop, the next one hurries it.
    pub async fn run(self, stop: impl Fn()) {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = self.streams {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                stop();
            }
        }
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return std::future::pending().await;
            }
            stop();
        }
    }
}

/// Resolves on each SIGHUP (never elsewhere). Waiting on it also keeps SIGHUP from
/// stopping the process, its default action.
pub async fn hangup() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                hup.recv().await;
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP"),
        }
    }
    std::future::pending::<()>().await;
}
