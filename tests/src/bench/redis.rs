//! Redis as the reference point: the network key-value store users would
//! otherwise pick. Runs only when `redis-server` and `redis-benchmark` are on
//! PATH (Debian packages `redis-server` and `redis-tools`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How Redis persists writes in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `--save "" --appendonly no`: nothing reaches disk.
    InMemory,
    /// `--appendonly yes --appendfsync always`: fsync before each reply.
    FsyncAlways,
}

/// Throughput and latency `redis-benchmark` reported for one command.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisResult {
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

pub fn available() -> bool {
    ["redis-server", "redis-benchmark"]
        .iter()
        .all(|bin| on_path(bin))
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(bin);
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && is_executable(&m))
        })
    })
}

#[cfg(unix)]
fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    true
}

/// A `redis-server` child on a free loopback port; killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    pub fn start(mode: RedisMode, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(dir)
            .arg("--daemonize")
            .arg("no")
            .arg("--save")
            .arg("");
        match mode {
            RedisMode::InMemory => {
                cmd.arg("--appendonly").arg("no");
            }
            RedisMode::FsyncAlways => {
                cmd.arg("--appendonly")
                    .arg("yes")
                    .arg("--appendfsync")
                    .arg("always");
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().context("spawning redis-server")?;
        let mut server = Self { child, port };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(self.port).unwrap_or(false) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server exited with {status} before answering PING");
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {} did not answer PING", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(port: u16) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].starts_with(b"+PONG"))
}

/// The kernel picks a free port; the tiny window before redis binds it is
/// acceptable on a loopback-only benchmark machine.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Runs `redis-benchmark -t <tests> -d <value> -c <clients> -n <requests>
/// --csv` and returns the result per test name (upper case, e.g. `SET`).
pub fn benchmark(
    port: u16,
    tests: &[&str],
    value_bytes: usize,
    clients: usize,
    requests: u64,
) -> anyhow::Result<Vec<(String, RedisResult)>> {
    let output = Command::new("redis-benchmark")
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .arg("-t")
        .arg(tests.join(","))
        .arg("-d")
        .arg(value_bytes.to_string())
        .arg("-c")
        .arg(clients.to_string())
        .arg("-n")
        .arg(requests.to_string())
        // Random keys over a keyspace, so GET reads keys SET just wrote
        // instead of one hot key.
        .arg("-r")
        .arg("10000")
        .arg("--csv")
        .stdin(Stdio::null())
        .output()
        .context("running redis-benchmark")?;
    if !output.status.success() {
        bail!(
            "redis-benchmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let results = parse_csv(&text);
    for test in tests {
        if !results
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(test))
        {
            bail!("redis-benchmark printed no {test} result; output:\n{text}");
        }
    }
    Ok(results)
}

/// Parses `--csv` output. Redis 7 prints a header
/// (`"test","rps","avg_latency_ms",...,"p50_latency_ms",...,"p99_latency_ms",...`);
/// older versions print only `"SET","12345.67"` rows.
pub fn parse_csv(text: &str) -> Vec<(String, RedisResult)> {
    let mut rps_col = 1;
    let mut p50_col = None;
    let mut p99_col = None;
    let mut results = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        if fields.len() < 2 {
            continue;
        }
        if fields[0] == "test" {
            let find = |name: &str| fields.iter().position(|f| *f == name);
            rps_col = find("rps").unwrap_or(1);
            p50_col = find("p50_latency_ms");
            p99_col = find("p99_latency_ms");
            continue;
        }
        let number = |col: Option<usize>| col.and_then(|c| fields.get(c)?.parse::<f64>().ok());
        let Some(rps) = number(Some(rps_col)) else {
            continue;
        };
        results.push((
            fields[0].to_ascii_uppercase(),
            RedisResult {
                rps,
                p50_ms: number(p50_col),
                p99_ms: number(p99_col),
            },
        ));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis7_csv() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"SET\",\"61349.69\",\"0.950\",\"0.200\",\"0.911\",\"1.503\",\"2.007\",\"5.100\"\n\
                   \"GET\",\"170940.17\",\"0.300\",\"0.100\",\"0.287\",\"0.400\",\"0.511\",\"1.000\"\n";
        let r = parse_csv(out);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, "SET");
        assert_eq!(r[0].1.rps, 61349.69);
        assert_eq!(r[0].1.p50_ms, Some(0.911));
        assert_eq!(r[0].1.p99_ms, Some(2.007));
        assert_eq!(r[1].0, "GET");
        assert_eq!(r[1].1.rps, 170940.17);
    }

    #[test]
    fn parses_headerless_csv() {
        let r = parse_csv("\"SET\",\"1000.00\"\n\"GET\",\"2000.50\"\n");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].1.rps, 2000.5);
        assert_eq!(r[1].1.p99_ms, None);
    }
}
