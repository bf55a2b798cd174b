//! `weir serve` as a user meets it: the real binary, a raw socket, the native protocol.
//!
//! These tests start the binary through `util::Weir` and speak `weir-proto` byte for byte, so
//! they check the wire contract and the process's lifecycle (listener line, signals, exit
//! code, data surviving a restart), not any client library.

mod util;

use std::process::Command;

use bytes::Bytes;
use util::{Connection, Options, Weir};
use weir_batch::BatchBuilder;
use weir_proto::{
    Durability, ErrorCode, Fsync, MessageId, Request, Response, Start, SubscriptionMode,
};

fn batch(values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(1_700_000_000_000, None, &[], value.as_bytes());
    }
    builder.finish()
}

fn create_topic(name: &str) -> Request {
    Request::CreateTopic {
        name: name.into(),
        partitions: 1,
        fsync: Fsync::Always,
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: None,
    }
}

fn subscribe(topic: &str, group: &str, mode: SubscriptionMode) -> Request {
    Request::Subscribe {
        topic: topic.into(),
        group: group.into(),
        mode,
        start: Start::Earliest,
        prefetch: 100,
        ack_timeout_ms: None,
    }
}

/// Reads deliveries until `count` messages have arrived.
fn receive_messages(connection: &mut Connection, count: usize) -> (u32, Vec<weir_proto::Delivery>) {
    let mut messages = Vec::new();
    let mut subscription_seen = None;
    while messages.len() < count {
        match connection.receive() {
            Some((
                0,
                Response::Deliver {
                    subscription,
                    messages: batch,
                },
            )) => {
                subscription_seen = Some(subscription);
                messages.extend(batch);
            }
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    (subscription_seen.expect("at least one delivery"), messages)
}

/// Goal: the whole happy path of a queue over the wire. Method: handshake, create a topic,
/// publish a batch of three, subscribe as a queue, receive all three, ack them, and see the
/// group settled.
#[test]
fn publish_then_consume_a_queue_and_ack() {
    let weir = Weir::start();
    let mut connection = weir.connect();
    match connection.call(&create_topic("orders")) {
        Response::Topic(info) => {
            assert_eq!(info.name, "orders");
            assert_eq!(info.partitions.len(), 1);
        }
        other => panic!("expected the topic, got {other:?}"),
    }
    let published = connection.call(&Request::Publish {
        topic: "orders".into(),
        partition: None,
        batch: batch(&["order 1", "order 2", "order 3"]),
    });
    let Response::Published {
        partitions,
        durability,
    } = published
    else {
        panic!("expected a confirm, got {published:?}");
    };
    assert_eq!(durability, Durability::Fsynced);
    assert_eq!(
        partitions
            .iter()
            .map(|range| range.last_offset - range.base_offset + 1)
            .sum::<u64>(),
        3
    );

    let Response::Subscribed { subscription } =
        connection.call(&subscribe("orders", "notifier", SubscriptionMode::Queue))
    else {
        panic!("expected Subscribed");
    };
    let (delivered_to, messages) = receive_messages(&mut connection, 3);
    assert_eq!(delivered_to, subscription);
    let mut values: Vec<&[u8]> = messages.iter().map(|message| &message.value[..]).collect();
    values.sort();
    assert_eq!(values, [&b"order 1"[..], b"order 2", b"order 3"]);
    let ids: Vec<MessageId> = messages.iter().map(|message| message.id()).collect();
    assert_eq!(
        connection.call(&Request::Ack { subscription, ids }),
        Response::Ok
    );
    match connection.call(&Request::DescribeGroup {
        topic: "orders".into(),
        group: "notifier".into(),
    }) {
        Response::Groups(groups) => {
            assert_eq!(groups[0].backlog, 0, "{groups:?}");
            assert_eq!(groups[0].partitions[0].in_flight, 0);
        }
        other => panic!("expected the group, got {other:?}"),
    }
}

/// Goal: a native client learns per id what an ack or nack did (issue 10, defect 8), and an
/// old client's plain `Ack` is still answered `Ok`. Method: two messages delivered; ack one
/// with `AckReporting` together with an offset never delivered, then ack it again; nack both
/// with `NackReporting`; finally a plain `Ack` of the unknown offset.
#[test]
fn reporting_acks_and_nacks_say_per_id_what_happened() {
    let weir = Weir::start();
    let mut connection = weir.connect();
    connection.call(&create_topic("orders"));
    connection.call(&Request::Publish {
        topic: "orders".into(),
        partition: None,
        batch: batch(&["order 1", "order 2"]),
    });
    let Response::Subscribed { subscription } =
        connection.call(&subscribe("orders", "billing", SubscriptionMode::Queue))
    else {
        panic!("expected Subscribed");
    };
    let (_, messages) = receive_messages(&mut connection, 2);
    let (first, second) = (messages[0].id(), messages[1].id());
    let never_delivered = MessageId {
        partition: 0,
        offset: 99,
    };
    assert_eq!(
        connection.call(&Request::AckReporting {
            subscription,
            ids: vec![first, never_delivered],
        }),
        Response::Settled {
            settled: 1,
            already_settled: vec![],
            unknown: vec![never_delivered],
        }
    );
    assert_eq!(
        connection.call(&Request::AckReporting {
            subscription,
            ids: vec![first],
        }),
        Response::Settled {
            settled: 0,
            already_settled: vec![first],
            unknown: vec![],
        }
    );
    assert_eq!(
        connection.call(&Request::NackReporting {
            subscription,
            ids: vec![second, first],
            requeue: false,
            delay_ms: 0,
            error: "bad order".into(),
        }),
        Response::Settled {
            settled: 1,
            already_settled: vec![first],
            unknown: vec![],
        }
    );
    assert_eq!(
        connection.call(&Request::Ack {
            subscription,
            ids: vec![never_delivered],
        }),
        Response::Ok
    );
}

/// Goal: garbage on one connection costs that connection only. Method: send a frame whose
/// length is shorter than a header, expect `malformed_frame` and a close, then serve a new
/// connection normally.
#[test]
fn a_malformed_frame_gets_an_error_and_a_close_while_the_server_stays_up() {
    let weir = Weir::start();
    let mut bad = Connection::open(weir.address);
    bad.send_raw(&[2, 0, 0, 0, 0xff, 0xff]);
    let (_, response) = bad.receive().expect("an error frame");
    assert_eq!(
        response.error_code(),
        Some(ErrorCode::MalformedFrame),
        "{response:?}"
    );
    assert_eq!(bad.receive(), None, "the connection is closed");

    let mut oversized = Connection::open(weir.address);
    oversized.send_raw(&u32::MAX.to_le_bytes());
    let (_, response) = oversized.receive().expect("an error frame");
    assert_eq!(response.error_code(), Some(ErrorCode::PayloadTooLarge));
    assert_eq!(oversized.receive(), None);

    let mut good = weir.connect();
    assert_eq!(good.call(&Request::Ping), Response::Pong);
}

/// Goal: SIGTERM is a clean stop that keeps what was confirmed. Method: publish with a
/// confirm, SIGTERM, expect exit status 0, restart on the same data directory and read the
/// message back through a new stream subscription.
#[test]
fn sigterm_exits_zero_and_a_confirmed_publish_survives_restart() {
    let mut weir = Weir::start();
    let mut connection = weir.connect();
    let published = connection.call(&Request::Publish {
        topic: "ledger".into(),
        partition: Some(0),
        batch: batch(&["entry 1"]),
    });
    assert!(
        matches!(published, Response::Published { .. }),
        "{published:?}"
    );

    let status = weir.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{}",
        weir.log()
    );
    assert!(weir.log().contains("broker stopped"), "{}", weir.log());
    // The server says goodbye before closing.
    let (_, goodbye) = connection.receive().expect("a goodbye frame");
    assert_eq!(goodbye.error_code(), Some(ErrorCode::ShuttingDown));

    weir.restart();
    let mut connection = weir.connect();
    let Response::Subscribed { .. } =
        connection.call(&subscribe("ledger", "auditor", SubscriptionMode::Stream))
    else {
        panic!("expected Subscribed");
    };
    let (_, messages) = receive_messages(&mut connection, 1);
    assert_eq!(&messages[0].value[..], b"entry 1");
    assert_eq!(messages[0].offset, 0);
}

/// Goal: settings reach the server with the documented precedence. Method: a config file sets
/// the frame limit to 4096 and an environment variable overrides it with 8192; the handshake
/// reports the limit in force.
#[test]
fn the_environment_overrides_the_config_file() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("weir.toml");
    std::fs::write(&config, "max_frame_bytes = 4096\n").unwrap();
    let limit_reported = |environment: Vec<(String, String)>| {
        let weir = Weir::start_with(Options {
            arguments: vec!["--config".into(), config.display().to_string()],
            environment,
            ..Options::default()
        });
        let mut connection = Connection::open(weir.address);
        match connection.call(&Request::Hello {
            min_version: 1,
            max_version: 1,
            client_name: "precedence".into(),
        }) {
            Response::HelloOk {
                max_frame_bytes, ..
            } => max_frame_bytes,
            other => panic!("expected HelloOk, got {other:?}"),
        }
    };
    assert_eq!(limit_reported(vec![]), 4096);
    assert_eq!(
        limit_reported(vec![("WEIR_MAX_FRAME_BYTES".into(), "8192".into())]),
        8192
    );
}

#[test]
fn serve_help_shows_an_example() {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--help"])
        .output()
        .expect("weir runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("--data-dir"), "{help}");
}
