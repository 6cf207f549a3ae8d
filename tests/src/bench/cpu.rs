//! CPU time per operation. On two shared cores the CPU a store burns per
//! call, on both ends of the connection, decides its ceiling, so every row
//! reports it next to throughput: the benchmark's own process through
//! `getrusage`, a server process through `/proc/<pid>/stat`.

use std::time::Duration;

use anyhow::{Context, bail};

/// User + system CPU of this process (every thread), from
/// `getrusage(RUSAGE_SELF)`.
pub fn self_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// User + system CPU of this process's terminated, waited-for children
/// (`redis-benchmark` runs), from `getrusage(RUSAGE_CHILDREN)`.
pub fn children_cpu() -> Duration {
    rusage(libc::RUSAGE_CHILDREN)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: `getrusage` only writes into the struct we hand it, and an
    // all-zero `rusage` is a valid value of that plain C struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User + system CPU of another live process, from fields 14 and 15 of
/// `/proc/<pid>/stat` (clock ticks, usually 10 ms each: fine over seconds).
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_sec <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// utime + stime in clock ticks. The command name (field 2) is in
/// parentheses and may contain spaces, so fields are counted after the
/// last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU used by the client side and (when known) the server process over
/// one measured phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    pub client: Duration,
    pub server: Option<Duration>,
}

/// Takes CPU readings at the start of a measured phase.
pub struct CpuMeter {
    client_start: Duration,
    children: bool,
    server: Option<(u32, Duration)>,
}

impl CpuMeter {
    /// `children`: count the CPU of child processes waited for during the
    /// phase (a `redis-benchmark` run) as the client's instead of this
    /// process's own.
    pub fn start(children: bool, server_pid: Option<u32>) -> Self {
        Self {
            client_start: if children { children_cpu() } else { self_cpu() },
            children,
            server: server_pid.and_then(|pid| Some((pid, process_cpu(pid).ok()?))),
        }
    }

    pub fn stop(self) -> CpuUse {
        let now = if self.children {
            children_cpu()
        } else {
            self_cpu()
        };
        CpuUse {
            client: now.saturating_sub(self.client_start),
            server: self
                .server
                .and_then(|(pid, start)| Some(process_cpu(pid).ok()?.saturating_sub(start))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "4242 (drasi store (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    1234 567 0 0 20 0 5 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn own_cpu_grows_with_work() {
        let before = self_cpu();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(self_cpu() > before);
        let pid = std::process::id();
        assert!(process_cpu(pid).unwrap() > Duration::ZERO);
    }
}
