fn main() -> std::process::ExitCode {
    drasi_store_server::cli_main()
}
