//! Process-wide settings made once at startup, before the runtime starts.

/// Ignores `SIGXFSZ` and raises the soft open-file limit to the hard one.
///
/// `SIGXFSZ`: a write past `RLIMIT_FSIZE` (or a filesystem's maximum file
/// size) sends this signal, whose default action kills the process with
/// no log line. Ignored, the write fails with `EFBIG` instead, which redb
/// reports as an I/O error and the writer recovers from by reopening the
/// database, like a full disk.
///
/// `RLIMIT_NOFILE`: every connection costs a descriptor, and container
/// runtimes often start processes with a soft limit of 1024 under a much
/// higher hard limit. Raising the soft limit lets the connection cap
/// (`--max-connections`) rather than `EMFILE` decide when to refuse.
pub(crate) fn harden() {
    // SAFETY: installing SIG_IGN for one signal has no preconditions and
    // happens before any other thread exists.
    let previous = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    if previous == libc::SIG_ERR {
        tracing::warn!(
            "cannot ignore SIGXFSZ; a write past the file size limit will kill the server"
        );
    }
    match raise_nofile() {
        Ok((from, to)) if from != to => {
            tracing::info!(from, to, "raised the open-file limit");
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
}

/// The soft open-file limit before and after raising it to the hard limit.
fn raise_nofile() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit with cur <= max.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}
