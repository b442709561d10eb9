//! The system's limits a crowd runs into before any of ours: the cap on a listen backlog
//! (`net.core.somaxconn`) and the open-files limit (`RLIMIT_NOFILE`), raised at start as
//! nginx's `worker_rlimit_nofile` does.

use std::io;

/// Where Linux keeps the cap on every listen call's backlog.
const SOMAXCONN_PATH: &str = "/proc/sys/net/core/somaxconn";

/// The system's cap on a listen backlog (`net.core.somaxconn`), when it can be read.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string(SOMAXCONN_PATH)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The open-files limit of this process: what it may open now, and the most it may raise
/// that to. `u64::MAX` stands for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit: `accept` fails with EMFILE past it.
    pub soft: u64,
    /// The hard limit: the most the soft one may be raised to without privileges.
    pub hard: u64,
}

/// Reads this process's open-files limit.
pub fn open_files() -> io::Result<OpenFiles> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFiles {
        soft: as_count(lim.rlim_cur),
        hard: as_count(lim.rlim_max),
    })
}

fn as_count(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v
    }
}

/// Raises the soft open-files limit to the hard one; the limit in force afterwards.
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let now = open_files()?;
    if now.soft >= now.hard {
        return Ok(now);
    }
    let lim = libc::rlimit {
        rlim_cur: libc::rlim_t::try_from(now.hard).unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::rlim_t::try_from(now.hard).unwrap_or(libc::RLIM_INFINITY),
    };
    // SAFETY: setrlimit reads one rlimit from the struct it is given, which lives here.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    open_files()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_read_and_raising_it_reaches_the_hard_one() {
        let before = open_files().expect("getrlimit");
        assert!(before.soft <= before.hard);
        let after = raise_open_files().expect("setrlimit");
        assert_eq!(after.soft, after.hard);
        assert_eq!(after.hard, before.hard);
    }
}
