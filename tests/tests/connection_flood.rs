//! A flood of silent connections against a server with a low open-file
//! limit (set with util-linux `prlimit`, as a container runtime would):
//! the connection cap (derived from that limit) and the probe reserve keep
//! `/healthz` answering, and the server does not spin on `accept` errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use drasi_store_tests::ServerProcess;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const SILENT: usize = 300;

/// One `GET /healthz` on a fresh connection; `None` when the server closed
/// it without answering (over the cap and the reserve).
fn healthz(addr: std::net::SocketAddr) -> Option<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

/// User + system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn healthz_answers_through_a_flood_of_silent_connections() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:256")
        .arg(SERVER)
        .args(["--listen", "127.0.0.1:0", "--log-format", "text"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--insecure-no-auth")
        .env_remove("RUST_LOG");
    let server = ServerProcess::spawn(cmd, data, None).unwrap();
    let addr = server.addr();
    assert!(
        server.log().contains("lowering it"),
        "the cap was not derived from the open-file limit:\n{}",
        server.log()
    );

    let silent: Vec<TcpStream> = (0..SILENT)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(
        silent.len() > 200,
        "only {} connections opened",
        silent.len()
    );

    // Probes still get through while every silent socket is held open.
    let deadline = Instant::now() + Duration::from_secs(15);
    let answer = loop {
        if let Some(answer) = healthz(addr) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered during the flood:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Idle under the flood: no accept loop spinning on EMFILE.
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(server.pid()) - before;
    // Clock ticks are 1/100 s on Linux: less than a quarter of one core.
    assert!(
        used < 50,
        "the server used {used} ticks of CPU in 2 s while flooded"
    );
    let accept_errors = server.log().matches("accept failed").count();
    assert!(accept_errors <= 1, "{accept_errors} accept errors logged");
    drop(silent);
}
