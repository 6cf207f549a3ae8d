//! drasi-store-server (being written).

pub fn cli_main() -> std::process::ExitCode {
    eprintln!("drasi-store-server is being written");
    std::process::ExitCode::FAILURE
}
