//! Keeps `docs/protocol.md` honest: its byte examples are what the codec produces, and every
//! kind and error code in `codes.rs` appears in its tables with the same number and name.

use bytes::BytesMut;
use weir_proto::{
    AlertInfo, AlertMetric, AlertState, Decision, DeliverWriter, ErrorCode, MessageId, Request,
    RequestKind, Response, ResponseKind,
};

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md exists at the repository root")
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_byte_examples_are_what_the_codec_writes() {
    let document = document();
    let mut examples = Vec::new();
    let mut encode = |write: &dyn Fn(&mut BytesMut)| {
        let mut buf = BytesMut::new();
        write(&mut buf);
        examples.push(hex(&buf));
    };
    encode(&|buf| Request::Ping.encode(1, buf));
    encode(&|buf| {
        Request::Hello {
            min_version: 1,
            max_version: 1,
            client_name: "cli".into(),
        }
        .encode(1, buf);
    });
    encode(&|buf| {
        Response::HelloOk {
            version: 1,
            server_name: "weir".into(),
            max_frame_bytes: 16 << 20,
        }
        .encode(1, buf);
    });
    encode(&|buf| Response::error(ErrorCode::UnknownTopic).encode(7, buf));
    encode(&|buf| {
        Request::Ack {
            subscription: 3,
            ids: vec![MessageId {
                partition: 0,
                offset: 42,
            }],
        }
        .encode(9, buf);
    });
    encode(&|buf| {
        Response::Settled {
            settled: 0,
            already_settled: Vec::new(),
            unknown: vec![MessageId {
                partition: 0,
                offset: 42,
            }],
        }
        .encode(9, buf);
    });
    encode(&|buf| {
        let mut writer = DeliverWriter::new(buf, 3);
        writer.push_parts(0, 42, 1, 1_700_000_000_000, Some(b"k"), &[], b"hi");
    });
    encode(&|buf| {
        Response::CheckTransaction {
            transaction: 5,
            producer_group: "orders".into(),
        }
        .encode(0, buf);
    });
    encode(&|buf| {
        Request::ResolveTransaction {
            transaction: 5,
            decision: Decision::Commit,
        }
        .encode(4, buf);
    });
    encode(&|buf| {
        Response::Alerts(vec![AlertInfo {
            rule: "high".into(),
            scope: "o/g".into(),
            metric: AlertMetric::Backlog,
            state: AlertState::Firing,
            value: 12_000.0,
            threshold: 10_000.0,
            since_ms: 1_700_000_000_000,
            message: "add".into(),
        }])
        .encode(3, buf);
    });
    for example in examples {
        assert!(
            document.lines().any(|line| line.trim() == example),
            "docs/protocol.md lacks the example line:\n{example}"
        );
    }
}

#[test]
fn every_kind_and_error_code_is_in_the_tables() {
    let document = document();
    let has_row = |number: &str, name: &str| {
        document.lines().any(|line| {
            line.starts_with('|') && line.contains(number) && line.contains(&format!("`{name}`"))
        })
    };
    for kind in RequestKind::ALL {
        let number = format!("`{:#04x}`", kind.code());
        assert!(has_row(&number, kind.name()), "{number} {kind} missing");
    }
    for kind in ResponseKind::ALL {
        let number = format!("`{:#04x}`", kind.code());
        assert!(has_row(&number, kind.name()), "{number} {kind} missing");
    }
    for code in ErrorCode::ALL {
        let number = format!("| {:<4} |", code.code());
        assert!(
            has_row(&number, code.name()),
            "{} {code} missing",
            code.code()
        );
        assert!(
            document.contains(code.default_message()),
            "{code}'s default message missing"
        );
    }
}
