//! `weir bench`'s embedded workloads as a user runs them: the real binary, a broker in its own
//! process on a temporary directory, tiny counts, and the JSONL it writes read back.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn number(record: &Value, field: &str) -> f64 {
    record["extra"][field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field} in {record}"))
}

/// Goal: schedule, transactions and publish-pending run end to end on an embedded broker and
/// write one sane record each: every delayed message delivered once and none early, lateness
/// quantiles in order, RSS read, every committed half message visible, both publish loops
/// complete. Method: 2,000 messages delayed over 1 s, 50 transactions of 10 half messages,
/// publish-pending with four rounds of 2,000 messages and 2,000 pending.
#[test]
fn the_embedded_workloads_run_and_write_sane_records() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let data = directory.path().join("data");
    std::fs::create_dir(&data).expect("a data directory");
    let out = directory.path().join("embedded.jsonl");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "bench",
            "--workloads",
            "schedule,transactions,publish-pending",
        ])
        .args([
            "--count",
            "2000",
            "--spread-secs",
            "1",
            "--schedule-batch",
            "100",
        ])
        .args(["--transactions", "50", "--pending", "2000"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .env_remove("RUST_LOG")
        .env_remove("WEIR_SERVER")
        .stdin(Stdio::null())
        .output()
        .expect("weir bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "weir bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    for row in [
        "| schedule | scheduling, msg/s |",
        "| schedule | lateness p99, ms |",
        "| transactions | transactions/s |",
        "| publish-pending | ratio, N pending / none |",
    ] {
        assert!(stdout.contains(row), "no {row} row in:\n{stdout}");
    }
    assert!(
        stderr.contains("embedded weir-core, no network"),
        "{stderr}"
    );
    // Each workload's broker directory is gone.
    let left: Vec<_> = std::fs::read_dir(&data)
        .expect("the data directory")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    let text = std::fs::read_to_string(&out).expect("the JSONL file");
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    let workloads: Vec<&str> = records
        .iter()
        .map(|record| record["workload"].as_str().expect("a workload name"))
        .collect();
    assert_eq!(workloads, ["schedule", "transactions", "publish-pending"]);
    for record in &records {
        assert_eq!(record["label"], "weir-embedded-always", "{record}");
        assert_eq!(record["complete"], true, "incomplete: {record}");
        assert_eq!(record["msgs"], record["target"], "{record}");
        for field in ["secs", "msgs_per_s", "mb_per_s"] {
            assert!(
                record[field].as_f64().is_some_and(|value| value > 0.0),
                "{field}: {record}"
            );
        }
    }

    let schedule = &records[0];
    assert_eq!(schedule["target"], 2000);
    assert_eq!(number(schedule, "delivered"), 2000.0);
    assert_eq!(number(schedule, "duplicates"), 0.0);
    assert_eq!(number(schedule, "early"), 0.0);
    assert_eq!(number(schedule, "schedule_calls"), 20.0);
    let lateness: Vec<f64> = ["p50_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|field| schedule[field].as_f64().expect("a lateness quantile"))
        .collect();
    assert!(lateness[0] >= 1.0, "{lateness:?}");
    assert!(
        lateness.windows(2).all(|pair| pair[0] <= pair[1]),
        "{lateness:?}"
    );
    // Delays are at most 1 s: nothing should be anywhere near a minute late.
    assert!(lateness[3] < 60_000_000.0, "{lateness:?}");
    let before = number(schedule, "rss_before_mib");
    assert!(before > 0.0, "{schedule}");
    assert!(number(schedule, "rss_peak_pending_mib") >= before * 0.5);
    assert!(number(schedule, "pending_at_peak") <= 2000.0);

    let transactions = &records[1];
    assert_eq!(transactions["target"], 500);
    assert_eq!(number(transactions, "transactions"), 50.0);
    assert_eq!(number(transactions, "visible"), 500.0);
    assert!(number(transactions, "transactions_per_s") > 0.0);
    assert!(number(transactions, "commit_p50_us") >= 1.0);
    assert!(number(transactions, "commit_p50_us") <= number(transactions, "commit_p99_us"));

    let publish = &records[2];
    assert_eq!(publish["target"], 8000, "four rounds of 2,000");
    assert_eq!(number(publish, "pending"), 2000.0);
    assert!(number(publish, "none_pending_msgs_per_s") > 0.0);
    let ratio = number(publish, "ratio_to_none_pending");
    let expected = publish["msgs_per_s"].as_f64().expect("a rate")
        / number(publish, "none_pending_msgs_per_s");
    assert!((ratio - expected).abs() < 1e-6, "{publish}");
    for round in 1..=4 {
        assert!(number(publish, &format!("round{round}_ratio")) > 0.0);
    }
}
