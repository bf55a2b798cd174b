//! The metadata store seen from outside the crate: reopening, and what survives a real `SIGKILL`.
//!
//! The crash tests re-execute this test binary as a child process (selected by an environment
//! variable naming the child's job), let it write, kill it with `SIGKILL`, and reopen the file in
//! the parent. The child reports each acknowledged write on stdout, one line per write, only
//! after `MetaStore::write` has returned.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use weir_storage::{MetaOp, MetaStore};

const LEFT: &str = "crash_left";
const RIGHT: &str = "crash_right";
const MARKERS: &str = "crash_markers";

/// Names the child's job; the child reads the database path from it.
const CHILD_WRITE_LOOP: &str = "WEIR_META_TEST_CHILD_WRITE_LOOP";
const CHILD_NON_DURABLE: &str = "WEIR_META_TEST_CHILD_NON_DURABLE";

/// A child that is never killed stops on its own after this, so a failed parent leaves no
/// process behind for long.
const CHILD_LIFETIME: Duration = Duration::from_secs(10);

fn put(table: &'static str, key: &[u8], value: &[u8]) -> MetaOp {
    MetaOp::Put {
        table,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

/// Starts this test binary running only `test_name`, as the child doing `job` on `path`.
fn spawn_child(test_name: &str, job: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(job, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child test process")
}

/// Forwards the child's complete stdout lines to a channel; a line cut short by the kill has no
/// newline and is dropped, so it never counts as an acknowledgement.
fn forward_lines(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (sender, receiver) = mpsc::channel();
    let forwarder = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.ends_with('\n') => {
                    if sender.send(line.trim_end().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    (receiver, forwarder)
}

/// The first line from the child that starts with `prefix`, skipping the test harness's own
/// output ("running 1 test"), or `None` if none arrives within ten seconds.
fn first_line_starting_with(lines: &mpsc::Receiver<String>, prefix: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let remaining = deadline.checked_duration_since(Instant::now())?;
        let line = lines.recv_timeout(remaining).ok()?;
        if line.starts_with(prefix) {
            return Some(line);
        }
    }
}

/// Ends the harness's unterminated `test name ... ` line, so the child's own lines start clean.
fn end_harness_line() {
    println!();
}

/// Child side of the crash loop: one durable write per number, putting it in two tables at
/// once, continuing after the highest number already stored.
fn child_write_loop(path: &Path) {
    end_harness_line();
    let store = MetaStore::open(path).expect("child opens the store");
    let mut next = store
        .scan(LEFT, b"")
        .expect("child scans")
        .last()
        .map_or(0, |(key, _)| decode(key) + 1);
    let started = Instant::now();
    while started.elapsed() < CHILD_LIFETIME {
        let key = next.to_be_bytes();
        store
            .write(
                &[put(LEFT, &key, b"left"), put(RIGHT, &key, b"right")],
                true,
            )
            .expect("child writes");
        // println! flushes at the newline: the parent sees this line only after the write returned.
        println!("acked {next}");
        next += 1;
    }
}

fn decode(key: &[u8]) -> u64 {
    u64::from_be_bytes(
        key.try_into()
            .expect("keys in the crash tables are 8 bytes"),
    )
}

fn keys(store: &MetaStore, table: &'static str) -> Vec<u64> {
    store
        .scan(table, b"")
        .expect("scan after the crash")
        .iter()
        .map(|(key, _)| decode(key))
        .collect()
}

/// Goal: every write acknowledged as durable survives `SIGKILL`, each multi-table write is all
/// or nothing, and the file always reopens cleanly. Method: ten cycles of a child writing in a
/// loop, killed at a random moment after its first acknowledgement; after each kill the parent
/// reopens the file and checks that both tables hold the same unbroken run of numbers from 0,
/// reaching at least the last acknowledged one.
#[test]
fn durable_writes_survive_sigkill() {
    if let Some(path) = std::env::var_os(CHILD_WRITE_LOOP) {
        child_write_loop(Path::new(&path));
        return;
    }
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path: PathBuf = directory.path().join("meta.redb");
    let mut random = rand::rng();
    let mut highest_acknowledged: Option<u64> = None;

    for cycle in 0..10 {
        let mut child = spawn_child("durable_writes_survive_sigkill", CHILD_WRITE_LOOP, &path);
        let (lines, forwarder) = forward_lines(&mut child);
        let Some(first) = first_line_starting_with(&lines, "acked ") else {
            let _ = child.kill();
            panic!("cycle {cycle}: the child acknowledged nothing");
        };
        std::thread::sleep(Duration::from_millis(random.random_range(0..100)));
        // Child::kill sends SIGKILL on Unix: no destructor, no close, no flush runs in the child.
        child.kill().expect("kill the child");
        child.wait().expect("reap the child");
        forwarder.join().expect("the forwarding thread");

        let acknowledged: Vec<u64> = std::iter::once(first)
            .chain(lines.try_iter())
            .filter_map(|line| line.strip_prefix("acked ")?.parse().ok())
            .collect();
        let last = *acknowledged.last().expect("at least the first line");
        highest_acknowledged = Some(last);

        let store = MetaStore::open(&path)
            .unwrap_or_else(|error| panic!("cycle {cycle}: reopen after SIGKILL failed: {error}"));
        let left = keys(&store, LEFT);
        let right = keys(&store, RIGHT);
        assert_eq!(left, right, "cycle {cycle}: a write survived only in part");
        let expected_len = usize::try_from(last + 1).expect("a small count");
        assert!(
            left.len() >= expected_len,
            "cycle {cycle}: acknowledged up to {last}, found {} entries",
            left.len()
        );
        assert!(
            left.iter().copied().eq(0..left.len() as u64),
            "cycle {cycle}: the stored numbers have a gap"
        );
        for number in acknowledged {
            assert_eq!(
                store.get(LEFT, &number.to_be_bytes()).expect("get"),
                Some(b"left".to_vec()),
                "cycle {cycle}: acknowledged {number} is missing"
            );
        }
    }
    assert!(highest_acknowledged.is_some());
}

/// Child side of the non-durable test: a durable write, then a non-durable one, then it
/// reports and waits to be killed.
fn child_non_durable(path: &Path) {
    end_harness_line();
    let store = MetaStore::open(path).expect("child opens the store");
    store
        .write(&[put(MARKERS, b"durable", b"1")], true)
        .expect("durable write");
    store
        .write(&[put(MARKERS, b"non-durable", b"1")], false)
        .expect("non-durable write");
    println!("written");
    std::thread::sleep(CHILD_LIFETIME);
}

/// Goal: pin down the documented weak side of `durable = false`: such a write is lost if the
/// process is killed before a later durable commit, while the durable write before it stays.
/// Method: a child makes one write of each kind, reports, and is killed with `SIGKILL`.
#[test]
fn non_durable_writes_are_lost_on_sigkill_before_a_durable_commit() {
    if let Some(path) = std::env::var_os(CHILD_NON_DURABLE) {
        child_non_durable(Path::new(&path));
        return;
    }
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("meta.redb");
    let mut child = spawn_child(
        "non_durable_writes_are_lost_on_sigkill_before_a_durable_commit",
        CHILD_NON_DURABLE,
        &path,
    );
    let (lines, forwarder) = forward_lines(&mut child);
    let reported = first_line_starting_with(&lines, "written");
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    forwarder.join().expect("the forwarding thread");
    assert_eq!(reported.as_deref(), Some("written"));

    let store = MetaStore::open(&path).expect("reopen after SIGKILL");
    assert_eq!(store.get(MARKERS, b"durable").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.get(MARKERS, b"non-durable").unwrap(), None);
}

/// Goal: a durable write survives dropping and reopening the store, several times over, and
/// what was deleted stays deleted.
#[test]
fn reopening_keeps_durable_writes_across_generations() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("meta.redb");
    for generation in 0_u64..5 {
        let store = MetaStore::open(&path).expect("open");
        let stored = keys(&store, LEFT);
        assert_eq!(stored, (0..generation).collect::<Vec<_>>());
        let mut ops = vec![put(LEFT, &generation.to_be_bytes(), b"")];
        ops.push(MetaOp::Delete {
            table: RIGHT,
            key: generation.to_be_bytes().to_vec(),
        });
        ops.push(put(RIGHT, &(generation + 1).to_be_bytes(), b""));
        store.write(&ops, true).expect("write");
        assert_eq!(keys(&store, RIGHT), vec![generation + 1]);
    }
}

/// Goal: damaged bytes on disk give an error or a consistent store, never a panic. Method: write
/// some entries, then flip bytes at random positions of a copy of the file and open each copy.
#[test]
fn flipped_bytes_never_panic_the_open() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let original = directory.path().join("meta.redb");
    {
        let store = MetaStore::open(&original).expect("open");
        let ops: Vec<MetaOp> = (0_u64..200)
            .map(|number| put(LEFT, &number.to_be_bytes(), &[7; 100]))
            .collect();
        store.write(&ops, true).expect("write");
    }
    let bytes = std::fs::read(&original).expect("read the file");
    let mut random = rand::rng();
    for attempt in 0..20 {
        let mut damaged = bytes.clone();
        for _ in 0..4 {
            let position = random.random_range(0..damaged.len());
            damaged[position] ^= 1 << random.random_range(0..8);
        }
        let copy = directory.path().join(format!("damaged-{attempt}.redb"));
        std::fs::write(&copy, &damaged).expect("write the damaged copy");
        // Either outcome is acceptable; a panic fails the test.
        if let Ok(store) = MetaStore::open(&copy) {
            let _ = store.scan(LEFT, b"");
        }
    }
    let garbage = directory.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0xA5; 64 * 1024]).expect("write garbage");
    assert!(MetaStore::open(&garbage).is_err());
}
