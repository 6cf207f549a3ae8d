//! Keeps the benchmark compiling and working in CI: a `--quick` run of every
//! workload against every store. It checks that each produced a result, never
//! how fast anything was (speed is for `--example bench` on a quiet machine).

use drasi_store_tests::bench::workloads::standard_workloads;
use drasi_store_tests::bench::{self, BenchOptions, ServerCommand, Subject};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_bench_measures_every_workload() -> anyhow::Result<()> {
    let opts = BenchOptions::parse_args(["--quick", "--rss-stores", "200"])?;
    assert!(opts.quick);
    let server = ServerCommand::binary(env!("CARGO_BIN_EXE_store-server-under-test"));
    let report = bench::run(&opts, &server).await?;

    for workload in standard_workloads() {
        for subject in [Subject::Memory, Subject::Embedded, Subject::Remote] {
            let m = report
                .find(&workload, subject)
                .unwrap_or_else(|| panic!("no result for {subject} / {workload}"));
            assert!(m.ops > 0, "{subject} / {workload}: no calls completed");
            assert!(m.entries_per_sec > 0.0, "{subject} / {workload}");
            assert!(m.client_cpu_per_op.is_some(), "{subject} / {workload}");
        }
        let remote = report.find(&workload, Subject::Remote).expect("checked");
        assert!(
            remote.server_cpu_per_op.is_some(),
            "{workload}: no server CPU reading"
        );
    }
    if bench::redis::available() {
        assert!(
            report
                .measurements
                .iter()
                .any(|m| m.subject == Subject::RedisFsyncAlways && m.ops > 0),
            "redis is installed but redis-benchmark produced no result"
        );
        assert!(
            report
                .measurements
                .iter()
                .any(|m| m.subject == Subject::RedisCrateFsyncAlways && m.ops > 0),
            "redis is installed but the redis crate produced no result"
        );
    }
    let rss = report.rss.as_ref().expect("RSS measured");
    assert_eq!(rss.store_ids, 200);
    assert!(rss.after > 0);

    let text = report.render();
    assert!(text.contains("## Targets"), "{text}");
    assert_eq!(report.targets().len(), 17);
    Ok(())
}
