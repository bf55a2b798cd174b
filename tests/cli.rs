//! The client verbs of `weir` as a user meets them: `pub`, `sub`, `topic …` and `group …` run
//! as processes against a real `weir serve`, judged by their stdout, stderr and exit code.
//!
//! Every command runs under a deadline and is killed past it, so a verb that hangs fails its
//! test instead of stalling the suite.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{Options, PATIENCE, Weir};

/// What a finished command left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Asserts success and returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}):\n{}", self.stdout))
    }
}

fn command(weir: &Weir, arguments: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(arguments)
        .env("WEIR_SERVER", weir.address.to_string())
        .env_remove("RUST_LOG")
        .env_remove("WEIR_LOG_LEVEL");
    command
}

/// Runs `weir ARGUMENTS` against `weir` with `input` on stdin, and waits (at most PATIENCE).
fn run_with_input(weir: &Weir, arguments: &[&str], input: &[u8]) -> Run {
    run_command(command(weir, arguments), input)
}

fn run(weir: &Weir, arguments: &[&str]) -> Run {
    run_with_input(weir, arguments, b"")
}

fn run_command(mut command: Command, input: &[u8]) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the weir binary starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // Written by a thread of its own: a large input would fill the pipe while the command
    // waits for us to read its output.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for weir") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {PATIENCE:?}; stderr:\n{}",
                stderr_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout_reader.join().expect("stdout read"),
        stderr: stderr_reader.join().expect("stderr read"),
    }
}

/// The `partition=P offset=O durability=D` confirm lines of `weir pub`, as (P, O).
fn confirms(run: &Run) -> Vec<(u32, u64)> {
    run.ok()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "a confirm line: {line}");
            assert_eq!(fields[2], "durability=fsynced", "{line}");
            let partition = fields[0].strip_prefix("partition=").expect(line);
            let offset = fields[1].strip_prefix("offset=").expect(line);
            (partition.parse().expect(line), offset.parse().expect(line))
        })
        .collect()
}

/// Goal: the README's first steps work. Method: publish a message given as an argument,
/// consume it with a named group and `--count 1`, and see that the group has nothing left.
#[test]
fn a_message_published_as_an_argument_is_consumed_by_a_group() {
    let weir = Weir::start();
    let published = run(&weir, &["pub", "orders", "order 1 created"]);
    assert_eq!(confirms(&published), [(0, 0)]);
    let consumed = run(
        &weir,
        &["sub", "orders", "--group", "notifier", "--count", "1"],
    );
    assert_eq!(consumed.ok(), "order 1 created\n");
    let group = run(
        &weir,
        &["group", "describe", "orders", "notifier", "--json"],
    )
    .json();
    assert_eq!(group["mode"], "queue");
    assert_eq!(group["backlog"], 0, "the message was acked: {group}");
}

/// Goal: each line of stdin is one message, published in order with a confirm each, fast
/// enough for large inputs. Method: pipe 5,000 lines (one with CRLF), check the confirms'
/// offsets, then read them all back with a stream that keeps no group.
#[test]
fn lines_of_stdin_are_published_in_order_and_read_back() {
    let weir = Weir::start();
    let mut input: String = (0..5000).map(|number| format!("line {number}\n")).collect();
    input.push_str("windows line\r\n");
    let published = run_with_input(&weir, &["pub", "lines"], input.as_bytes());
    let expected: Vec<(u32, u64)> = (0..5001).map(|offset| (0, offset)).collect();
    assert_eq!(confirms(&published), expected);

    let consumed = run(
        &weir,
        &["sub", "lines", "--from", "earliest", "--count", "5001"],
    );
    assert_eq!(consumed.ok(), input.replace("\r\n", "\n"));
    let quiet = run_with_input(&weir, &["pub", "lines", "--quiet"], b"one\ntwo\n");
    assert_eq!(quiet.ok(), "");
}

/// Goal: `--json` output is JSON a script can rely on: every field named in the help, text as
/// text and binary data as base64. Method: publish with a key and headers, and a non-UTF-8
/// line; parse `pub --json` and `sub --json` line by line.
#[test]
fn json_output_parses_with_every_field() {
    let weir = Weir::start();
    let published = run(
        &weir,
        &[
            "pub",
            "events",
            "hello",
            "--key",
            "customer-7",
            "--header",
            "source=web",
            "--header",
            "trace=a=b",
            "--json",
        ],
    )
    .json();
    assert_eq!(published["partition"], 0);
    assert_eq!(published["offset"], 0);
    assert_eq!(published["durability"], "fsynced");
    run_with_input(&weir, &["pub", "events", "--quiet"], b"\xff\xfe\n").ok();

    let consumed = run(
        &weir,
        &[
            "sub", "events", "--from", "earliest", "--count", "2", "--json",
        ],
    );
    let lines: Vec<Value> = consumed
        .lines()
        .iter()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    let first = &lines[0];
    assert_eq!(first["topic"], "events");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["key"], "customer-7");
    assert_eq!(first["headers"]["source"], "web");
    assert_eq!(first["headers"]["trace"], "a=b");
    assert_eq!(first["payload"], "hello");
    // Read without a group: no delivery, so no delivery count.
    assert_eq!(first["delivery_count"], 0);
    assert!(first["timestamp_ms"].as_i64().is_some_and(|ms| ms > 0));
    assert!(
        first["timestamp"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z'))
    );
    let second = &lines[1];
    assert_eq!(second["payload_base64"], "//4=");
    assert_eq!(second["key"], Value::Null);
}

/// Goal: a key sends every message to one partition, and `--partitions` creates the topic.
/// Method: publish 20 keyed lines to a new 4-partition topic; all confirms name one
/// partition, and the topic's description shows the 20 messages there and nowhere else.
#[test]
fn a_key_lands_every_message_in_one_partition() {
    let weir = Weir::start();
    let input: String = (0..20).map(|number| format!("event {number}\n")).collect();
    let published = run_with_input(
        &weir,
        &["pub", "keyed", "--partitions", "4", "--key", "customer-7"],
        input.as_bytes(),
    );
    let confirms = confirms(&published);
    let partition = confirms[0].0;
    assert_eq!(
        confirms,
        (0..20)
            .map(|offset| (partition, offset))
            .collect::<Vec<_>>()
    );
    let topic = run(&weir, &["topic", "describe", "keyed", "--json"]).json();
    let partitions = topic["partitions"].as_array().expect("a partition list");
    assert_eq!(partitions.len(), 4);
    for entry in partitions {
        let expected = if entry["partition"] == partition {
            20
        } else {
            0
        };
        assert_eq!(entry["messages"], expected, "{topic}");
    }
}

/// Goal: `--count` exits after that many messages and leaves the rest to the group. Method:
/// publish five, take two, see a backlog of three, take the other three.
#[test]
fn count_exits_and_the_rest_stays_with_the_group() {
    let weir = Weir::start();
    run_with_input(&weir, &["pub", "jobs", "--quiet"], b"a\nb\nc\nd\ne\n").ok();
    let first = run(
        &weir,
        &["sub", "jobs", "--group", "workers", "--count", "2"],
    );
    assert_eq!(first.ok(), "a\nb\n");
    let group = run(&weir, &["group", "describe", "jobs", "workers", "--json"]).json();
    assert_eq!(group["backlog"], 3, "{group}");
    let rest = run(
        &weir,
        &["sub", "jobs", "--group", "workers", "--count", "3"],
    );
    assert_eq!(rest.ok(), "c\nd\ne\n");
}

/// Goal: a closed stdout ends `sub` as success, at once, even while it waits for messages.
/// Method: read the first line of `weir sub`'s output, close the pipe, and wait for the exit.
#[test]
fn a_closed_stdout_ends_sub_successfully() {
    let weir = Weir::start();
    run_with_input(&weir, &["pub", "tail", "--quiet"], b"first\nsecond\n").ok();
    let mut child = command(&weir, &["sub", "tail", "--from", "earliest"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the weir binary starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("a first line");
    assert_eq!(line, "first\n");
    drop(stdout);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for weir") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("weir sub kept running after its stdout was closed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr);
    assert!(status.success(), "{status:?}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Goal: the topic verbs do what they say, in tables and in JSON. Method: create a topic
/// with every option, refuse a second creation with the server's error, list, describe,
/// delete, and see it gone.
#[test]
fn topics_are_created_listed_described_and_deleted() {
    let weir = Weir::start();
    let created = run(
        &weir,
        &[
            "topic",
            "create",
            "payments",
            "--partitions",
            "3",
            "--fsync",
            "os",
            "--retention-ms",
            "60000",
        ],
    );
    assert_eq!(created.ok(), "created topic 'payments' with 3 partitions\n");
    let again = run(&weir, &["topic", "create", "payments"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("topic_exists"), "{}", again.stderr);

    let table = run(&weir, &["topic", "list"]);
    let rows = table.lines();
    assert!(rows[0].starts_with("TOPIC"), "{}", table.stdout);
    assert!(
        rows.iter().any(|row| row.starts_with("payments ")
            && row.contains(" 3 ")
            && row.contains("os")
            && row.contains("1m")),
        "{}",
        table.stdout
    );
    let listed = run(&weir, &["topic", "list", "--json"]).json();
    let payments = &listed[0];
    assert_eq!(payments["name"], "payments");
    assert_eq!(payments["fsync"], "os");
    assert_eq!(payments["retention_ms"], 60000);
    assert_eq!(payments["partitions"].as_array().map(Vec::len), Some(3));

    let described = run(&weir, &["topic", "describe", "payments"]);
    assert!(described.ok().contains("PARTITION"), "{}", described.stdout);
    assert_eq!(
        described
            .lines()
            .iter()
            .filter(|line| line.trim_start().starts_with(char::is_numeric))
            .count(),
        3,
        "a row per partition:\n{}",
        described.stdout
    );

    assert_eq!(
        run(&weir, &["topic", "delete", "payments"]).ok(),
        "deleted topic 'payments'\n"
    );
    assert_eq!(run(&weir, &["topic", "list"]).ok(), "no topics\n");
}

/// Goal: groups can be listed, described and reset, and a reset replays. Method: consume
/// three messages with a queue group and a stream group; list both; describe one; reset the
/// queue to the start and to an offset, the stream to a time, and consume again.
#[test]
fn groups_are_listed_described_and_reset_for_replay() {
    let weir = Weir::start();
    run_with_input(&weir, &["pub", "orders", "--quiet"], b"a\nb\nc\n").ok();
    let queue = ["sub", "orders", "--group", "billing", "--count", "3"];
    assert_eq!(run(&weir, &queue).ok(), "a\nb\nc\n");
    let stream = [
        "sub", "orders", "--group", "audit", "--mode", "stream", "--count", "3",
    ];
    assert_eq!(run(&weir, &stream).ok(), "a\nb\nc\n");

    let listed = run(&weir, &["group", "list", "orders"]);
    let rows = listed.lines();
    assert!(rows[0].starts_with("TOPIC"), "{}", listed.stdout);
    assert!(
        rows.iter()
            .any(|row| row.contains("billing") && row.contains("queue")),
        "{}",
        listed.stdout
    );
    assert!(
        rows.iter()
            .any(|row| row.contains("audit") && row.contains("stream")),
        "{}",
        listed.stdout
    );
    let described = run(&weir, &["group", "describe", "orders", "billing"]);
    assert!(
        described.ok().contains("COMMITTED") && described.stdout.contains("IN-FLIGHT"),
        "{}",
        described.stdout
    );
    let json = run(&weir, &["group", "describe", "orders", "billing", "--json"]).json();
    assert_eq!(json["partitions"][0]["committed"], 3, "{json}");
    assert_eq!(json["partitions"][0]["backlog"], 0, "{json}");

    let reset = run(
        &weir,
        &["group", "reset", "orders", "billing", "--to", "earliest"],
    );
    assert!(reset.ok().contains("earliest"), "{}", reset.stdout);
    assert_eq!(run(&weir, &queue).ok(), "a\nb\nc\n", "replayed after reset");
    run(&weir, &["group", "reset", "orders", "billing", "--to", "1"]).ok();
    let from_offset = ["sub", "orders", "--group", "billing", "--count", "2"];
    assert_eq!(run(&weir, &from_offset).ok(), "b\nc\n");

    // Every message is older than a time in the future, and newer than one long past.
    run(
        &weir,
        &[
            "group",
            "reset",
            "orders",
            "audit",
            "--to",
            "2999-01-01T00:00:00Z",
        ],
    )
    .ok();
    let audit = run(&weir, &["group", "describe", "orders", "audit", "--json"]).json();
    assert_eq!(audit["backlog"], 0, "{audit}");
    run(
        &weir,
        &["group", "reset", "orders", "audit", "--to", "@100000000000"],
    )
    .ok();
    assert_eq!(
        run(&weir, &stream).ok(),
        "a\nb\nc\n",
        "replayed from a time"
    );
}

/// Goal: an unreachable broker is a clear message and exit code 3. Method: point a command
/// at a port nobody listens on.
#[test]
fn an_unreachable_server_exits_with_code_3_and_says_where() {
    let weir = Weir::start();
    let unused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address")
    };
    let server = unused.to_string();
    let failed = run(&weir, &["topic", "list", "--server", &server]);
    assert_eq!(failed.code, 3, "{}", failed.stderr);
    assert!(
        failed
            .stderr
            .contains(&format!("cannot connect to the broker at {server}")),
        "{}",
        failed.stderr
    );
    assert!(failed.stdout.is_empty());
}

/// Goal: a server error names what it is about and exits with code 2. Method: describe a
/// topic that does not exist, and publish to one on a server that does not create topics.
#[test]
fn an_unknown_topic_error_names_the_topic() {
    let weir = Weir::start_with(Options {
        arguments: vec!["--auto-create-topics".into(), "false".into()],
        ..Options::default()
    });
    let described = run(&weir, &["topic", "describe", "missing"]);
    assert_eq!(described.code, 2, "{}", described.stderr);
    assert!(
        described.stderr.contains("unknown_topic") && described.stderr.contains("'missing'"),
        "{}",
        described.stderr
    );
    let published = run(&weir, &["pub", "absent", "hello"]);
    assert_eq!(published.code, 2, "{}", published.stderr);
    assert!(
        published.stderr.contains("unknown_topic") && published.stderr.contains("absent"),
        "{}",
        published.stderr
    );
}

/// Goal: usage errors exit with 1, and every verb's help has an example. Method: run verbs
/// with missing or bad arguments, and read each `--help`.
#[test]
fn usage_errors_exit_with_1_and_every_help_has_an_example() {
    let weir = Weir::start();
    for arguments in [
        &["pub"][..],
        &["sub", "orders", "--from", "soon"],
        &["sub", "orders", "--mode", "queue"],
        &["topic", "create", "t", "--fsync", "sometimes"],
        &["group", "reset", "orders", "g"],
    ] {
        let failed = run(&weir, arguments);
        assert_eq!(failed.code, 1, "{arguments:?}: {}", failed.stderr);
        assert!(!failed.stderr.is_empty(), "{arguments:?}");
    }
    for verb in [
        &["pub"][..],
        &["sub"],
        &["topic"],
        &["topic", "create"],
        &["topic", "list"],
        &["topic", "describe"],
        &["topic", "delete"],
        &["group"],
        &["group", "list"],
        &["group", "describe"],
        &["group", "reset"],
    ] {
        let mut arguments = verb.to_vec();
        arguments.push("--help");
        let help = run(&weir, &arguments);
        assert!(
            help.ok().contains("Example"),
            "{verb:?} --help:\n{}",
            help.stdout
        );
    }
}

/// Goal: reading without a group leaves no state behind (issue 10, defect 3: every
/// `weir sub TOPIC` made a permanent group `weir-sub-<ms>-<pid>`, which kept a backlog and
/// fired `backlog-high`). Method: publish over two partitions, read them all without a group
/// from the earliest, from an offset and from a time; the broker then has no group at all.
#[test]
fn reading_without_a_group_leaves_no_group_behind() {
    let weir = Weir::start();
    let input: String = (0..6).map(|number| format!("event {number}\n")).collect();
    run_with_input(
        &weir,
        &["pub", "events", "--partitions", "2", "--quiet"],
        input.as_bytes(),
    )
    .ok();
    let sorted = |run: Run| {
        let mut lines: Vec<String> = run.ok().lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let everything: Vec<String> = input.lines().map(str::to_owned).collect();
    let earliest = run(
        &weir,
        &["sub", "events", "--from", "earliest", "--count", "6"],
    );
    assert_eq!(sorted(earliest), everything, "every partition is read");
    let from_offset = run(&weir, &["sub", "events", "--from", "2", "--count", "2"]);
    assert_eq!(
        from_offset.ok().lines().count(),
        2,
        "offset 2 of each partition: {}",
        from_offset.stdout
    );
    let from_time = run(
        &weir,
        &[
            "sub",
            "events",
            "--from",
            "@100000000000",
            "--count",
            "6",
            "--json",
        ],
    );
    assert_eq!(from_time.ok().lines().count(), 6, "{}", from_time.stdout);

    let groups = run(&weir, &["group", "list", "--json"]).json();
    assert_eq!(groups, serde_json::json!([]), "no group was left behind");
}

/// Goal: a reset past the end says where the group really went (issue 10, defect 9: `--to 99`
/// printed "moved to offset 99" while the broker clamped the group to the end, 6). Method:
/// as Kafka's `kafka-consumer-groups --reset-offsets`, the reset clamps, warns, and shows each
/// partition's new offset; the group then describes as at 6.
#[test]
fn a_reset_past_the_end_reports_the_offset_reached() {
    let weir = Weir::start();
    run_with_input(&weir, &["pub", "jobs", "--quiet"], b"a\nb\nc\nd\ne\nf\n").ok();
    run(
        &weir,
        &["sub", "jobs", "--group", "workers", "--count", "1"],
    )
    .ok();
    let reset = run(&weir, &["group", "reset", "jobs", "workers", "--to", "99"]);
    let stdout = reset.ok();
    assert!(
        !stdout.contains("moved to offset 99"),
        "the group did not reach offset 99:\n{stdout}"
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    let header = rows
        .iter()
        .position(|row| row.first() == Some(&"PARTITION"))
        .unwrap_or_else(|| panic!("a table of partitions:\n{stdout}"));
    assert_eq!(rows[header], ["PARTITION", "NEW-OFFSET", "END"], "{stdout}");
    assert_eq!(rows[header + 1], ["0", "6", "6"], "{stdout}");
    assert!(
        reset.stderr.contains("past the end") && reset.stderr.contains('6'),
        "a warning that the offset was clamped:\n{}",
        reset.stderr
    );
    let group = run(&weir, &["group", "describe", "jobs", "workers", "--json"]).json();
    assert_eq!(group["partitions"][0]["committed"], 6, "{group}");
}
