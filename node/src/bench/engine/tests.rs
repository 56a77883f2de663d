//! End-to-end runs of the benchmark on tiny datasets.

use super::*;

/// Engines this build can run.
fn compiled_engines() -> Vec<EngineKind> {
    let mut engines = vec![EngineKind::Strata];
    if cfg!(feature = "bench-fjall") {
        engines.push(EngineKind::Fjall);
    }
    engines
}

fn tiny_config(engines: Vec<EngineKind>) -> EngineBenchConfig {
    EngineBenchConfig {
        keys: 2_000,
        reads: Some(500),
        memtable_mb: 1,
        block_cache_mb: 1,
        engines,
        format: OutputFormat::Json,
        ..EngineBenchConfig::default()
    }
}

fn parse_lines(out: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(out)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

#[test]
fn defaults_match_the_documented_ones() {
    let c = EngineBenchConfig::default();
    assert_eq!(c.keys, 1_000_000);
    assert_eq!(c.reads(), 1_000_000);
    assert_eq!(c.key_size, 16);
    assert_eq!(c.value_size, 100);
    assert_eq!(c.scan_len, 10);
    assert_eq!(c.workloads, Workload::ALL.to_vec());
    assert_eq!(c.engines, compiled_engines());
    assert_eq!(c.block_cache_mb, 64);
    assert_eq!(c.memtable_mb, 64);
    assert_eq!(c.compression, BenchCompression::None);
    assert!(!c.sync);
    assert_eq!(c.format, OutputFormat::Text);
    assert!(c.dir.is_none());
}

#[test]
fn all_workloads_report_json_lines_with_the_right_op_counts() {
    let engines = compiled_engines();
    let config = tiny_config(engines.clone());
    let mut out = Vec::new();
    let report = run(&config, &mut out).expect("benchmark runs");
    let lines = parse_lines(&out);
    assert_eq!(lines.len(), Workload::ALL.len() * engines.len() + 1);

    let (summary, results) = lines.split_last().unwrap();
    assert_eq!(summary["summary"], true);
    assert!(summary["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(summary["keys"], 2_000);
    assert_eq!(summary["untimed_load"], false);

    for engine in &engines {
        for workload in Workload::ALL {
            let line = results
                .iter()
                .find(|l| l["workload"] == workload.name() && l["engine"] == engine.name())
                .unwrap_or_else(|| panic!("no line for {workload} on {engine}"));
            let want_ops = match workload {
                Workload::Readrandom | Workload::Seekrandom => 500,
                _ => 2_000,
            };
            assert_eq!(line["ops"], want_ops, "{workload} on {engine}: {line}");
            assert!(line["ops_per_sec"].as_f64().unwrap() > 0.0, "{line}");
            let p50 = line["p50_us"].as_f64().unwrap();
            let p99 = line["p99_us"].as_f64().unwrap();
            assert!(p50 >= 0.0 && p99 >= p50, "{line}");
            if workload.writes() {
                let wa = line["write_amp"].as_f64().expect("write_amp for writes");
                // The WAL alone writes every byte once more.
                assert!(wa >= 1.0, "{workload} on {engine}: write_amp {wa}");
                assert_eq!(line["user_bytes"], 2_000 * (16 + 100));
                assert_eq!(line["includes_flush"], true);
            } else {
                assert!(line["write_amp"].is_null(), "{line}");
            }
            match workload {
                Workload::Readrandom => assert_eq!(line["found"], 500, "{line}"),
                Workload::Readseq => assert_eq!(line["found"], 2_000, "{line}"),
                // 500 seeks of 10 entries, fewer only near the end of the key space.
                Workload::Seekrandom => {
                    let found = line["found"].as_u64().unwrap();
                    assert!(found > 500 * 9 && found <= 500 * 10, "{line}")
                }
                _ => {}
            }
        }
    }
    assert_eq!(report.results.len(), Workload::ALL.len() * engines.len());
}

#[test]
fn text_report_has_a_table_per_workload() {
    let engines = compiled_engines();
    let mut config = tiny_config(engines.clone());
    config.format = OutputFormat::Text;
    config.keys = 300;
    config.reads = Some(100);
    config.workloads = vec![Workload::Readrandom, Workload::Fillseq];
    let mut out = Vec::new();
    run(&config, &mut out).expect("benchmark runs");
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("durability: WAL/journal on for every engine, no fsync"));
    assert!(
        text.contains("fillseq (300 ops, time includes final flush"),
        "{text}"
    );
    assert!(text.contains("readrandom (100 ops)"), "{text}");
    assert!(!text.contains("overwrite ("), "{text}");
    assert!(text.contains("fillrandom not selected"), "{text}");
    assert!(text.contains("peak RSS (VmHWM)"), "{text}");
    if engines.len() == 2 {
        assert!(text.contains("strata/fjall"), "{text}");
    }
}

#[test]
fn a_given_dir_is_kept_and_must_be_fresh() {
    let base = std::env::temp_dir().join(format!("strata-bench-test-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let mut config = tiny_config(vec![EngineKind::Strata]);
    config.keys = 100;
    config.workloads = vec![Workload::Fillseq];
    config.dir = Some(base.clone());
    run(&config, &mut Vec::new()).expect("first run");
    assert!(base.join("strata-fillseq").exists());
    let err = run(&config, &mut Vec::new()).expect_err("the database is not fresh");
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn rejects_bad_options() {
    let mut config = tiny_config(vec![EngineKind::Strata]);
    config.key_size = 3; // 2,000 keys need 4 digits
    let err = run(&config, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("--key-size"), "{err}");

    let mut config = tiny_config(vec![EngineKind::Strata]);
    config.scan_len = 0;
    assert!(run(&config, &mut Vec::new()).is_err());
}

#[cfg(not(feature = "bench-fjall"))]
#[test]
fn asking_for_fjall_without_the_feature_says_how_to_rebuild() {
    let config = tiny_config(vec![EngineKind::Fjall]);
    let err = run(&config, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("--features bench-fjall"), "{err}");
}

#[test]
fn mvccget_reads_versions_both_ways_and_reports_counters() {
    let mut config = tiny_config(compiled_engines());
    config.workloads = vec![Workload::MvccgetPlain, Workload::Mvccget];
    config.mvcc_versions = 3;
    let mut out = Vec::new();
    let report = run(&config, &mut out).expect("benchmark runs");
    // Strata only, whatever engines were asked for; prefix reads first.
    let runs: Vec<(Workload, EngineKind)> = report
        .results
        .iter()
        .map(|r| (r.workload, r.engine))
        .collect();
    assert_eq!(
        runs,
        [
            (Workload::Mvccget, EngineKind::Strata),
            (Workload::MvccgetPlain, EngineKind::Strata)
        ]
    );
    for r in &report.results {
        assert_eq!(r.ops, 500);
        // Read timestamps span one step below the first version to one past the last:
        // about 1/8 of the reads come before any version.
        let found = r.found.expect("found is reported");
        assert!((350..500).contains(&found), "found {found} of 500");
        let counters = r.counters.as_ref().expect("counters are reported");
        assert!(counters["tables_in_db"] >= 1.0, "{counters:?}");
        assert!(counters.contains_key("cpu_us"), "{counters:?}");
    }
    // Both paths read the same tables; only the prefix path consults prefix filters.
    let (prefix, plain) = (&report.results[0], &report.results[1]);
    let c = |r: &WorkloadResult, k: &str| r.counters.as_ref().map_or(-1.0, |c| c[k]);
    assert_eq!(c(prefix, "tables_in_db"), c(plain, "tables_in_db"));
    assert_eq!(prefix.found, plain.found);
    assert!(c(prefix, "prefix_table_checks") > 0.0);
    assert_eq!(c(plain, "prefix_table_checks"), 0.0);
}
