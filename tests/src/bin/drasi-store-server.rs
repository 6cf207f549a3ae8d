//! The real server binary, built inside this package so that its integration
//! tests get `CARGO_BIN_EXE_drasi-store-server` (Cargo only sets that for
//! binaries of the same package). It runs exactly the server's own `main`.
fn main() -> std::process::ExitCode {
    drasi_store_server::cli_main()
}
