//! Runs the real `drasi-store-server` binary as a child process on loopback.
//!
//! Tests start many servers in parallel, so each binds `127.0.0.1:0` and we
//! learn the port from the `listening ... addr=IP:PORT` line the server logs
//! on stderr at startup. stderr is drained for the whole life of the child (a
//! full pipe would block the server) and kept so failures can show it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a server may take to log its address: a crashed database is
/// repaired before the server listens, which can take a while under load.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ServerProcessBuilder {
    binary: PathBuf,
    data_dir: PathBuf,
    token: Option<String>,
    listen: String,
    args: Vec<String>,
}

impl ServerProcessBuilder {
    /// Authenticate with `token` (written to `<data_dir>/../token` unless
    /// [`Self::arg`] already passes `--auth-token-file`). Without a token the
    /// server runs with `--insecure-no-auth`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Listen on a fixed address instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Any extra server flag (e.g. `--durability`, `eventual`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn start(self) -> anyhow::Result<ServerProcess> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data dir {}", self.data_dir.display()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--listen")
            .arg(&self.listen)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--log-format")
            .arg("text")
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let has_token_flag = self.args.iter().any(|a| a == "--auth-token-file");
        match (&self.token, has_token_flag) {
            (_, true) => {}
            (Some(token), false) => {
                let file = self.data_dir.with_extension("token");
                std::fs::write(&file, format!("{token}\n"))
                    .with_context(|| format!("writing token file {}", file.display()))?;
                cmd.arg("--auth-token-file").arg(file);
            }
            (None, false) => {
                cmd.arg("--insecure-no-auth");
            }
        }
        ServerProcess::spawn(cmd, self.data_dir, self.token)
    }
}

/// A running server child process; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    data_dir: PathBuf,
    token: Option<String>,
    log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// `binary` is the server executable, e.g.
    /// `env!("CARGO_BIN_EXE_store-server-under-test")` in this package's tests.
    pub fn builder(binary: impl Into<PathBuf>, data_dir: impl AsRef<Path>) -> ServerProcessBuilder {
        ServerProcessBuilder {
            binary: binary.into(),
            data_dir: data_dir.as_ref().to_path_buf(),
            token: None,
            listen: "127.0.0.1:0".to_string(),
            args: Vec::new(),
        }
    }

    /// Spawns a fully prepared command (which must log `--log-format text`
    /// to stderr) and waits until it reports its address.
    pub fn spawn(
        mut cmd: Command,
        data_dir: PathBuf,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = tx.as_ref().and(parse_listening_addr(&line)) {
                    let _ = tx.take().expect("checked").send(addr);
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    return Ok(Self {
                        child,
                        addr,
                        data_dir,
                        token,
                        log,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = child.try_wait()? {
                        std::thread::sleep(Duration::from_millis(100));
                        bail!(
                            "server exited with {status} before listening; stderr:\n{}",
                            log.lock().unwrap()
                        );
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        bail!(
                            "server did not log its address within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                            log.lock().unwrap()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait()?;
                    bail!(
                        "server closed stderr ({status}) before listening; stderr:\n{}",
                        log.lock().unwrap()
                    );
                }
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// `kill -9`: no chance to flush or commit anything.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn terminate(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "server did not exit within {timeout:?} after SIGTERM; stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `addr=IP:PORT` on the server's `listening` line.
pub fn parse_listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let value = rest
        .split_whitespace()
        .next()?
        .trim_matches(|c| c == '"' || c == ',');
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_listening_addr;

    #[test]
    fn parses_text_log_line() {
        let line = "2026-11-25T23:59:59.000Z  INFO drasi_store_server::server: listening addr=127.0.0.1:41234 tls=false";
        assert_eq!(
            parse_listening_addr(line),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(
            parse_listening_addr("listening addr=[::1]:7070"),
            Some("[::1]:7070".parse().unwrap())
        );
        assert_eq!(parse_listening_addr("starting addr=127.0.0.1:1"), None);
        assert_eq!(parse_listening_addr("listening tls=false"), None);
    }
}
