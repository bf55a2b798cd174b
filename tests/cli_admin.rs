//! The CLI verbs for routing, dead letters, delayed and transactional messages and stats, as a
//! user meets them, against a real `weir serve`: what `tests/guide.rs` does not already run
//! (message ids, `--at`, schedule show and reschedule, exchange unbind and delete, dlq purge,
//! txn rollback, `weir stats`, `weir top`), their refusals and exit codes, and that every verb's
//! `--help` shows an example.

mod util;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{PATIENCE, Weir};

fn weir(server: &Weir, arguments: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(arguments)
        .env("WEIR_SERVER", server.address.to_string())
        .env_remove("RUST_LOG")
        .env_remove("WEIR_LOG_LEVEL")
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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ok(server: &Weir, arguments: &[&str]) -> String {
    let output = weir(server, arguments);
    assert!(
        output.status.success(),
        "weir {arguments:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// Goal: every new verb and sub-verb explains itself with an example.
#[test]
fn every_verb_shows_an_example_in_its_help() {
    let server = Weir::start();
    for verb in [
        &["exchange"][..],
        &["exchange", "bind"],
        &["dlq"],
        &["dlq", "redrive"],
        &["schedule"],
        &["schedule", "cancel"],
        &["txn"],
        &["txn", "commit"],
        &["stats"],
        &["top"],
        &["pub"],
        &["sub"],
    ] {
        let mut arguments = verb.to_vec();
        arguments.push("--help");
        let help = ok(&server, &arguments);
        assert!(
            help.contains("Example"),
            "{verb:?} --help has no example:\n{help}"
        );
    }
}

/// Goal: a message id makes a republish a duplicate confirmed at the first copy; `--id`
/// without a MESSAGE, `--business-key` without a delay and a delay with an exchange are
/// refused as usage errors (exit 1).
#[test]
fn message_ids_and_refused_flag_combinations() {
    let server = Weir::start();
    let first = ok(
        &server,
        &["pub", "payments", "payment 1", "--id", "p-1", "--json"],
    );
    let again = ok(
        &server,
        &["pub", "payments", "payment 1", "--id", "p-1", "--json"],
    );
    let (first, again) = (json(&first), json(&again));
    assert_eq!(first["offset"], again["offset"]);
    assert_eq!(again["duplicate"], true);
    assert!(first.get("duplicate").is_none());
    for arguments in [
        &["pub", "payments", "--id", "p-2"][..],
        &["pub", "payments", "x", "--business-key", "k"],
        &["pub", "--exchange", "e", "x", "--delay", "1s"],
        &["pub", "payments", "x", "--delay", "soon"],
        &["sub", "payments", "--max-deliveries", "3"],
    ] {
        let output = weir(&server, arguments);
        assert_ne!(output.status.code(), Some(0), "{arguments:?} was accepted");
        assert_ne!(output.status.code(), Some(3), "{arguments:?}: {output:?}");
    }
}

/// Goal: `--at`, `schedule show`, `schedule reschedule` and cancel by id work, and a time more
/// than a year ahead is the broker's refusal (exit 2).
#[test]
fn scheduled_messages_are_shown_rescheduled_and_cancelled_by_id() {
    let server = Weir::start();
    // A whole second a month from now, as --at takes it.
    let month_ahead = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + Duration::from_secs(30 * 24 * 3600),
    )
    .to_string();
    let scheduled = json(&ok(
        &server,
        &[
            "pub",
            "reports",
            "monthly report",
            "--at",
            &month_ahead,
            "--json",
        ],
    ));
    assert_eq!(
        scheduled["deliver_at"],
        month_ahead.replace('Z', ".000Z").as_str()
    );
    let refused = weir(&server, &["pub", "reports", "x", "--delay", "400d"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let scheduled = json(&ok(
        &server,
        &["pub", "reports", "weekly report", "--delay", "1h", "--json"],
    ));
    let id = scheduled["id"].as_u64().expect("an id").to_string();
    let shown = json(&ok(&server, &["schedule", "show", &id, "--json"]));
    assert_eq!(shown["messages"][0]["payload"], "weekly report");
    let moved = ok(&server, &["schedule", "reschedule", &id, "--delay", "2h"]);
    assert!(
        moved.starts_with(&format!("rescheduled id={id} deliver_at=")),
        "{moved}"
    );
    let listed = json(&ok(&server, &["schedule", "list", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert_eq!(
        listed[0]["id"].as_u64().map(|id| id.to_string()),
        Some(id.clone()),
        "in due order"
    );
    ok(&server, &["schedule", "cancel", &id]);
    let gone = weir(&server, &["schedule", "show", &id]);
    assert_eq!(gone.status.code(), Some(2), "{gone:?}");
}

/// Goal: exchanges can be unbound and deleted, an alternate topic catches what matches
/// nothing, and deleting an unknown exchange is the broker's refusal.
#[test]
fn exchanges_are_unbound_deleted_and_have_an_alternate_topic() {
    let server = Weir::start();
    ok(
        &server,
        &[
            "exchange",
            "create",
            "events",
            "--kind",
            "direct",
            "--alternate-topic",
            "unrouted",
        ],
    );
    ok(
        &server,
        &[
            "exchange",
            "bind",
            "events",
            "signups",
            "--key",
            "user.created",
        ],
    );
    let routed = ok(
        &server,
        &[
            "pub",
            "--exchange",
            "events",
            "--routing-key",
            "user.deleted",
            "bye",
            "--mandatory",
        ],
    );
    assert!(routed.contains("topic=unrouted"), "{routed}");
    let unbound = json(&ok(
        &server,
        &["exchange", "unbind", "events", "signups", "--json"],
    ));
    assert_eq!(unbound["bindings"].as_array().map(Vec::len), Some(0));
    ok(&server, &["exchange", "delete", "events"]);
    assert_eq!(
        json(&ok(&server, &["exchange", "list", "--json"])),
        json("[]")
    );
    let missing = weir(&server, &["exchange", "delete", "events"]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
}

/// Goal: `weir stats` shows topics and subscriptions (tables and JSON, with rates when it
/// samples twice), `dlq purge` empties a dead-letter queue, `txn rollback` of an unknown
/// transaction is refused, and `weir top` redraws until interrupted.
#[test]
fn stats_top_purge_and_rollback() {
    let server = Weir::start();
    ok(&server, &["pub", "orders", "order 1"]);
    ok(&server, &["pub", "orders", "order 2"]);
    // A reject (the --no-ack sub leaves it unacked; a later consumer would redeliver it).
    ok(
        &server,
        &[
            "sub",
            "orders",
            "--group",
            "billing",
            "--max-deliveries",
            "1",
            "--count",
            "1",
        ],
    );
    let table = ok(&server, &["stats", "--interval", "100ms"]);
    assert!(
        table.contains("orders") && table.contains("billing"),
        "{table}"
    );
    let snapshot = json(&ok(&server, &["stats", "--interval", "0s", "--json"]));
    let topic = snapshot["topics"]
        .as_array()
        .and_then(|topics| topics.iter().find(|topic| topic["name"] == "orders"))
        .expect("the topic");
    assert_eq!(topic["published_messages"], 2);
    let subscription = snapshot["subscriptions"]
        .as_array()
        .and_then(|subscriptions| {
            subscriptions
                .iter()
                .find(|subscription| subscription["group"] == "billing")
        })
        .expect("the subscription");
    assert_eq!(subscription["backlog"], 1);
    assert_eq!(subscription["counters"]["acked"], 1);

    let not_a_dlq = weir(&server, &["dlq", "purge", "orders"]);
    assert_eq!(not_a_dlq.status.code(), Some(2), "{not_a_dlq:?}");
    // A queue that dead-letters its oldest message when more than one waits.
    let first = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["sub", "alerts", "--group", "pager", "--max-backlog", "1"])
        .args(["--overflow", "dead-letter-oldest", "--count", "1"])
        .env("WEIR_SERVER", server.address.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir sub starts");
    let deadline = Instant::now() + PATIENCE;
    while !ok(&server, &["group", "list"]).contains("pager") {
        assert!(Instant::now() < deadline, "the group was not created");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(&server, &["pub", "alerts", "disk full"]);
    let taken = first
        .wait_with_output()
        .expect("weir sub ends after one message");
    assert_eq!(stdout(&taken).trim(), "disk full");
    for alert in ["cpu hot", "fan loud", "door open"] {
        ok(&server, &["pub", "alerts", alert]);
    }
    while !ok(&server, &["dlq", "list"]).contains("alerts.pager.dlq") {
        assert!(Instant::now() < deadline, "nothing was dead-lettered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let shown = ok(&server, &["dlq", "show", "alerts.pager.dlq"]);
    assert!(shown.contains("overflow"), "{shown}");
    let purged = ok(&server, &["dlq", "purge", "alerts.pager.dlq"]);
    assert!(
        purged.starts_with("purged ") && !purged.starts_with("purged 0 "),
        "{purged}"
    );
    let refused = weir(&server, &["txn", "rollback", "12345"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(ok(&server, &["txn", "list"]).starts_with("ID"));

    let mut top = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["top", "--interval", "200ms"])
        .env("WEIR_SERVER", server.address.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir top starts");
    std::thread::sleep(Duration::from_millis(800));
    let status = Command::new("kill")
        .args(["-INT", &top.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    while top.try_wait().expect("waiting for weir top").is_none() {
        assert!(Instant::now() < deadline, "weir top did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = top.wait_with_output().expect("its output");
    assert!(output.status.success(), "{output:?}");
    let screen = stdout(&output);
    assert!(screen.matches("\x1b[2J").count() >= 2, "redrawn: {screen}");
    assert!(screen.contains("billing"), "{screen}");
}
