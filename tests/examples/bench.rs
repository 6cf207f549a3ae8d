//! The benchmark: `cargo run --release -p drasi-store-tests --example bench`
//! (`-- --help` for options). See `docs/benchmarks.md`.
//!
//! The remote provider needs a real server process. An example cannot use
//! another package's binary, so the benchmark re-runs its own executable with
//! [`SERVER_CHILD_ENV`] set, and that child is the real server
//! (`drasi_store_server::cli_main()`, the same entry point as the
//! `drasi-store-server` binary).

use std::process::ExitCode;

use drasi_store_tests::bench::{self, BenchOptions, ServerCommand};

const SERVER_CHILD_ENV: &str = "DRASI_BENCH_SERVER_CHILD";

fn main() -> ExitCode {
    if bench::is_server_child(SERVER_CHILD_ENV) {
        return drasi_store_server::cli_main();
    }
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{}", BenchOptions::USAGE);
        return ExitCode::SUCCESS;
    }
    let opts = match BenchOptions::parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("building the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let server = ServerCommand::reexec_current(SERVER_CHILD_ENV)?;
        eprintln!(
            "drasi-store benchmark ({}); progress on stderr, report on stdout",
            if opts.quick { "quick" } else { "full" }
        );
        bench::run(&opts, &server).await
    });
    match result {
        Ok(report) => {
            println!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
