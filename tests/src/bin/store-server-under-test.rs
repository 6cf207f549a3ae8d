//! The real server, built inside this package so that its integration tests
//! get `CARGO_BIN_EXE_store-server-under-test` (Cargo only sets that for
//! binaries of the same package). It runs exactly the server's own `main`;
//! the name differs from `drasi-store-server` so the two binaries do not
//! collide in the shared target directory.
fn main() -> std::process::ExitCode {
    drasi_store_server::cli_main()
}
