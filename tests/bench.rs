//! `weir bench` as a user runs it: the real binary against a real `weir serve`, every workload
//! on a small count, and the JSONL it writes read back as peerbench would read it.

mod util;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{PATIENCE, Weir};

/// Goal: the bench runs W1–W4 end to end and writes one valid peerbench record per workload,
/// each complete, with rates, latencies and the broker's CPU. Method: 2,000 messages, W3 for
/// half a second, fsync=always, against a server started by the harness.
#[test]
fn the_bench_runs_every_workload_and_writes_peerbench_records() {
    let weir = Weir::start();
    let directory = tempfile::tempdir().expect("a temporary directory");
    let out = directory.path().join("weir.jsonl");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "--server", &weir.address.to_string()])
        .args(["--workloads", "w1,w2,w3,w4", "--count", "2000"])
        .args(["--w3-secs", "0.5", "--max-secs", "10"])
        .args(["--server-pid", &weir.pid().to_string()])
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
        "weir bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver:\n{}",
        output.status,
        weir.log()
    );
    assert!(
        started.elapsed() < PATIENCE + Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    // The summary table names every workload.
    for row in ["W1 publish", "W2 consume", "W3 latency", "W4 fan-out"] {
        assert!(stdout.contains(row), "no {row} row in:\n{stdout}");
    }

    let text = std::fs::read_to_string(&out).expect("the JSONL file");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    let workloads: Vec<&str> = records
        .iter()
        .map(|record| record["workload"].as_str().expect("a workload name"))
        .collect();
    assert_eq!(workloads, ["W1", "W2", "W3", "W4"]);
    let expected_targets = [2000, 2000, 5000, 2000];
    for (record, target) in records.iter().zip(expected_targets) {
        let workload = &record["workload"];
        assert_eq!(record["label"], "weir-always", "{record}");
        assert_eq!(record["peer"], "weir", "{record}");
        assert_eq!(record["run"], 1, "{record}");
        assert_eq!(record["complete"], true, "{workload} incomplete: {record}");
        assert_eq!(record["target"], target, "{record}");
        assert_eq!(record["msgs"], target, "{record}");
        assert!(
            record["durability"]
                .as_str()
                .is_some_and(|text| text.contains("fsync=always")),
            "{record}"
        );
        for field in ["secs", "msgs_per_s", "mb_per_s"] {
            assert!(
                record[field].as_f64().is_some_and(|value| value > 0.0),
                "{workload} {field}: {record}"
            );
        }
        let extra = &record["extra"];
        for field in ["server_cpu_s", "client_cpu_s", "others_cpu_s"] {
            assert!(
                extra[field].as_f64().is_some(),
                "{workload} {field}: {record}"
            );
        }
        assert!(record["unix_time"].as_u64().is_some_and(|time| time > 0));
    }
    // W1 has confirm latency; W3 has end-to-end latency, in order.
    assert!(
        records[0]["extra"]["confirm_p50_us"]
            .as_f64()
            .is_some_and(|value| value >= 1.0)
    );
    let latency: Vec<f64> = ["p50_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|field| records[2][field].as_f64().expect("a W3 latency"))
        .collect();
    assert!(latency[0] >= 1.0, "{latency:?}");
    assert!(
        latency.windows(2).all(|pair| pair[0] <= pair[1]),
        "{latency:?}"
    );
    assert_eq!(records[3]["extra"]["groups"], 4.0);
    for record in &records[..2] {
        assert!(record["p50_us"].is_null(), "{record}");
    }

    // Every topic the bench made is gone.
    let mut connection = weir.connect();
    match connection.call(&weir_proto::Request::ListTopics) {
        weir_proto::Response::Topics(topics) => assert!(
            topics.iter().all(|topic| !topic.name.starts_with("bench_")),
            "{topics:?}"
        ),
        other => panic!("expected topics, got {other:?}"),
    }
}
