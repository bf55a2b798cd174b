//! Real crashes: a child process appends batches, syncing after each group and printing the
//! confirmed offset range; the parent SIGKILLs it at a random moment, reopens the log and checks
//! that every confirmed batch is there, intact (each record's value encodes its offset), with
//! contiguous offsets and no partial record. At least 50 cycles; `WEIR_KILL_CYCLES=N` runs more.
//!
//! The child is this test binary re-executed with `WEIR_KILL9_CHILD=<log dir>`, running only the
//! `child_appender` test, which does nothing in a normal run.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_storage::{Batch, BatchBuilder, LogConfig, PartitionLog};

const CHILD_ENV: &str = "WEIR_KILL9_CHILD";
const VALUE_LEN: usize = 100;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 << 10,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

/// The value of the record at `offset`: the offset, then a byte pattern derived from it.
fn value_for(offset: u64) -> [u8; VALUE_LEN] {
    let mut value = [offset as u8; VALUE_LEN];
    value[..8].copy_from_slice(&offset.to_le_bytes());
    value
}

/// The child: appends groups of batches forever, printing each confirmed range once synced.
#[test]
fn child_appender() {
    let Ok(directory) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mut log, _) =
        PartitionLog::open_path(Path::new(&directory), config()).expect("child open");
    let mut rng = StdRng::seed_from_u64(std::process::id().into());
    let mut stdout = std::io::stdout().lock();
    loop {
        let first = log.next_offset();
        for _ in 0..rng.random_range(1..20) {
            let records = rng.random_range(1..10);
            let base = log.next_offset();
            let mut builder = BatchBuilder::new();
            for index in 0..records {
                builder.push(1_700_000_000_000, None, &[], &value_for(base + index));
            }
            let batch = Batch::parse(builder.finish(), usize::MAX).expect("built batch");
            log.append(&batch, 0).expect("child append");
        }
        log.sync().expect("child sync");
        writeln!(stdout, "confirmed {first} {}", log.next_offset()).expect("stdout");
        stdout.flush().expect("stdout flush");
    }
}

/// Checks batches from `from` to the end; returns the end offset.
fn verify(log: &PartitionLog, from: u64, cycle: usize) -> u64 {
    let reader = log.reader();
    let end = reader.end_offset();
    let mut next = from;
    while next < end {
        let batches = reader
            .read(next, 1 << 20)
            .unwrap_or_else(|error| panic!("cycle {cycle}: read at {next} failed: {error}"));
        assert!(
            !batches.is_empty(),
            "cycle {cycle}: nothing at {next} below end {end}"
        );
        for batch in batches {
            // The first batch may start before `next` (it holds it); after that, no gaps.
            assert!(
                batch.base_offset() <= next,
                "cycle {cycle}: gap from {next} to {}",
                batch.base_offset()
            );
            for record in batch.records() {
                let record = record.expect("parsed batches hold valid records");
                assert_eq!(
                    &record.value[..],
                    &value_for(record.offset)[..],
                    "cycle {cycle}: record {}",
                    record.offset
                );
            }
            next = batch.next_offset();
        }
    }
    end
}

#[test]
fn confirmed_batches_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles: usize = std::env::var("WEIR_KILL_CYCLES")
        .ok()
        .and_then(|cycles| cycles.parse().ok())
        .unwrap_or(50);
    let temporary = tempfile::tempdir().expect("temporary directory");
    let directory = temporary.path().join("log");
    let executable = std::env::current_exe().expect("test binary path");
    let seed: u64 = std::env::var("WEIR_KILL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("kill9: {cycles} cycles, seed {seed} (WEIR_KILL_SEED to replay the kill times)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut confirmed_end = 0u64;
    let mut verified_to = 0u64;
    let mut kills_mid_stream = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut child = Command::new(&executable)
            .args([
                "child_appender",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &directory)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (confirmations, confirmed) = std::sync::mpsc::channel();
        let lines = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(range) = line.strip_prefix("confirmed ") {
                    let mut parts = range
                        .split(' ')
                        .map(|part| part.parse::<u64>().expect("offset"));
                    let (first, end) = (parts.next().expect("first"), parts.next().expect("end"));
                    last = Some((first, end));
                    let _ = confirmations.send(end);
                }
            }
            last
        });
        // Odd cycles kill at any moment, start-up and recovery included; even cycles wait for
        // the first confirmation, so that most kills land in the middle of the append stream
        // however slow the machine is.
        if cycle % 2 == 0 {
            confirmed
                .recv_timeout(Duration::from_secs(20))
                .expect("the child confirms a first group");
            std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(5..80)));
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        if let Some((_, end)) = lines.join().expect("reader thread") {
            assert!(end >= confirmed_end, "confirmations go forward");
            confirmed_end = end;
            kills_mid_stream += 1;
        }
        let (log, report) =
            PartitionLog::open_path(&directory, config()).expect("reopen after kill");
        assert!(
            log.next_offset() >= confirmed_end,
            "cycle {cycle}: confirmed up to {confirmed_end}, recovered only {} ({report:?})",
            log.next_offset()
        );
        verify(&log, verified_to.min(confirmed_end), cycle);
        // Unconfirmed bytes past the last confirmation may be cut by the next recovery, so the
        // next cycle re-checks from the last confirmed offset.
        verified_to = confirmed_end;
    }
    let (log, _) = PartitionLog::open_path(&directory, config()).expect("final open");
    let end = verify(&log, 0, cycles);
    assert!(end >= confirmed_end);
    assert!(
        kills_mid_stream * 2 >= cycles,
        "most children should have confirmed something before the kill"
    );
    eprintln!(
        "kill9: {cycles} cycles in {:?}, {end} records, {} segments",
        started.elapsed(),
        log.segment_count()
    );
}
