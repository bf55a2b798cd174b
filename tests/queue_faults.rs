//! Queue subscriptions where a feature meets a fault, against the real `weir serve` and the
//! real `weir` CLI (issue 10): consumers killed while they hold a message.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::{PATIENCE, Weir};

/// Runs `weir ARGUMENTS` against `server` to the end; panics if it takes longer than
/// [`PATIENCE`].
fn weir(server: &Weir, arguments: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(arguments)
        .env("WEIR_SERVER", server.address.to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the weir binary starts");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("waiting for weir").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("weir {arguments:?} did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("the output of weir")
}

/// [`weir`], asserting success; returns stdout.
fn weir_ok(server: &Weir, arguments: &[&str]) -> String {
    let output = weir(server, arguments);
    assert!(
        output.status.success(),
        "weir {arguments:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Starts `weir sub ARGUMENTS --json`, waits for the first message it prints, SIGKILLs it
/// (it holds that message, unacked) and returns the message as JSON.
fn first_message_then_kill(server: &Weir, arguments: &[&str]) -> serde_json::Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("sub")
        .args(arguments)
        .arg("--json")
        .env("WEIR_SERVER", server.address.to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the weir binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (line_sender, line) = mpsc::channel();
    // The reader keeps the pipe open until the consumer dies: `weir sub` ends cleanly (giving
    // its message back uncounted) when nobody reads its output any more, and this test is
    // about a consumer that crashes.
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        let _ = line_sender.send(first);
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let line = line.recv_timeout(PATIENCE);
    child.kill().expect("SIGKILL"); // `Child::kill` sends SIGKILL on Unix.
    child.wait().expect("the killed consumer is reaped");
    let line = line.unwrap_or_else(|_| panic!("weir sub printed nothing within {PATIENCE:?}"));
    serde_json::from_str(line.trim()).unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"))
}

/// Goal (issue 10 defect 4, the guide's scenario): a poison message that kills every consumer
/// that takes it reaches the dead-letter queue after `max_deliveries`, instead of being
/// delivered for ever with `delivery_count 1`. Method: `weir sub --group workers
/// --max-deliveries 2` is SIGKILLed while it holds the message, twice; each run sees the
/// count go up, and the message then waits in `weir dlq show` with `delivery_count` 2.
#[test]
fn a_message_whose_consumer_is_killed_holding_it_reaches_the_dlq_after_max_deliveries() {
    let server = Weir::start();
    weir_ok(&server, &["topic", "create", "jobs"]);
    weir_ok(&server, &["pub", "jobs", "poison pill"]);
    let consumer = [
        "jobs",
        "--group",
        "workers",
        "--max-deliveries",
        "2",
        "--prefetch",
        "1",
        "--no-ack",
    ];
    for attempt in 1..=2 {
        let message = first_message_then_kill(&server, &consumer);
        assert_eq!(message["payload"], "poison pill");
        assert_eq!(message["delivery_count"], attempt, "{message}");
    }
    let deadline = Instant::now() + PATIENCE;
    let letter = loop {
        // Until the first dead letter is stored, the dead-letter topic does not exist.
        let shown = weir(&server, &["dlq", "show", "jobs.workers.dlq", "--json"]);
        let shown = String::from_utf8_lossy(&shown.stdout);
        if let Some(line) = shown.lines().next() {
            break serde_json::from_str::<serde_json::Value>(line).expect("JSON");
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter within {PATIENCE:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(letter["payload"], "poison pill");
    assert_eq!(letter["headers"]["weir.dlq.reason"], "max_deliveries");
    assert_eq!(letter["headers"]["weir.dlq.delivery_count"], "2");
}
