//! Every decoding error path, each with a hand-built payload: what the decoder must refuse,
//! and that its error says where, what was expected and what was found.

use bytes::{BufMut, Bytes, BytesMut};
use weir_batch::BatchBuilder;
use weir_proto::{
    DEFAULT_MAX_FRAME_BYTES, DecodeError, DeliverWriter, Delivery, ErrorCode, Frame, FrameError,
    Request, RequestKind, Response, ResponseKind,
};

fn payload(build: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut buf = BytesMut::new();
    build(&mut buf);
    buf.freeze()
}

fn put_string(buf: &mut BytesMut, text: &str) {
    buf.put_u32_le(u32::try_from(text.len()).expect("a short test string"));
    buf.put_slice(text.as_bytes());
}

fn batch() -> Bytes {
    let mut builder = BatchBuilder::new();
    builder.push(1, Some(b"key"), &[("trace", b"1")], b"value");
    builder.finish()
}

#[test]
fn an_unknown_kind_is_refused_by_both_decoders() {
    for kind in [0x00, 0x03, 0x7f, 0xff] {
        assert_eq!(
            Request::decode(kind, Bytes::new()),
            Err(DecodeError::UnknownKind { kind })
        );
    }
    // A response kind is not a request, and the reverse: the direction is part of the kind.
    for kind in ResponseKind::ALL {
        assert!(matches!(
            Request::decode(kind.code(), Bytes::new()),
            Err(DecodeError::UnknownKind { .. })
        ));
    }
    for kind in RequestKind::ALL {
        assert!(matches!(
            Response::decode(kind.code(), Bytes::new()),
            Err(DecodeError::UnknownKind { .. })
        ));
    }
    assert_eq!(
        DecodeError::UnknownKind { kind: 9 }.code(),
        ErrorCode::UnsupportedRequest
    );
}

#[test]
fn a_string_that_is_not_utf8_is_refused_where_it_starts() {
    let bad = payload(|buf| {
        buf.put_u32_le(3);
        buf.put_slice(&[b'o', 0xc3, 0x28]);
    });
    let error = Request::decode(RequestKind::DescribeTopic.code(), bad).unwrap_err();
    assert_eq!(
        error,
        DecodeError::InvalidUtf8 {
            offset: 4,
            expected: "topic name",
            invalid_at: 5
        }
    );
    assert_eq!(error.code(), ErrorCode::MalformedFrame);
    assert_eq!(
        error.to_string(),
        "at payload byte 4: expected topic name as UTF-8, found an invalid byte at 5"
    );
}

#[test]
fn a_header_name_that_is_not_utf8_is_refused_in_a_delivery() {
    let bad = payload(|buf| {
        buf.put_u32_le(1); // subscription
        buf.put_u32_le(1); // one delivery
        buf.put_u32_le(0);
        buf.put_u64_le(0);
        buf.put_u32_le(1);
        buf.put_i64_le(0);
        buf.put_u8(0); // no key
        buf.put_u32_le(1); // one header
        buf.put_u32_le(1);
        buf.put_u8(0xff); // its name
        buf.put_u32_le(0);
        buf.put_u32_le(0); // empty value
    });
    assert!(matches!(
        Response::decode(ResponseKind::Deliver.code(), bad),
        Err(DecodeError::InvalidUtf8 {
            expected: "header name",
            ..
        })
    ));
}

#[test]
fn a_string_length_past_the_payload_is_truncation() {
    let bad = payload(|buf| {
        buf.put_u32_le(1000);
        buf.put_slice(b"short");
    });
    let error = Request::decode(RequestKind::DeleteTopic.code(), bad).unwrap_err();
    assert_eq!(
        error,
        DecodeError::Truncated {
            offset: 4,
            expected: "topic name",
            needed: 1000,
            available: 5
        }
    );
    assert_eq!(
        error.to_string(),
        "at payload byte 4: expected topic name (1000 bytes), found 5 bytes"
    );
}

/// Goal: a count no payload could hold is refused before the decoder reserves room for it.
/// Method: claim four billion ids, deliveries, topics and groups in a payload of a few bytes;
/// the test would abort on allocation failure if the decoder trusted the count.
#[test]
fn counts_larger_than_the_payload_are_refused_before_allocating() {
    let ack = payload(|buf| {
        buf.put_u32_le(1);
        buf.put_u32_le(u32::MAX);
        buf.put_slice(&[0; 12]);
    });
    assert_eq!(
        Request::decode(RequestKind::Ack.code(), ack),
        Err(DecodeError::CountTooLarge {
            offset: 4,
            expected: "message id list",
            count: u32::MAX,
            needed: u64::from(u32::MAX) * 12,
            available: 12
        })
    );
    let deliver = payload(|buf| {
        buf.put_u32_le(1);
        buf.put_u32_le(u32::MAX);
    });
    assert!(matches!(
        Response::decode(ResponseKind::Deliver.code(), deliver),
        Err(DecodeError::CountTooLarge {
            expected: "delivery list",
            available: 0,
            ..
        })
    ));
    let topics = payload(|buf| buf.put_u32_le(2));
    assert!(matches!(
        Response::decode(ResponseKind::Topics.code(), topics),
        Err(DecodeError::CountTooLarge { count: 2, .. })
    ));
    let groups = payload(|buf| {
        buf.put_u32_le(1);
        buf.put_slice(&[0; 24]); // one byte short of the smallest group
    });
    assert!(matches!(
        Response::decode(ResponseKind::Groups.code(), groups),
        Err(DecodeError::CountTooLarge {
            count: 1,
            needed: 25,
            available: 24,
            ..
        })
    ));
    // An exact fit is accepted: the bound is not off by one.
    let ack = payload(|buf| {
        buf.put_u32_le(1);
        buf.put_u32_le(1);
        buf.put_u32_le(3);
        buf.put_u64_le(9);
    });
    assert!(Request::decode(RequestKind::Ack.code(), ack).is_ok());
}

#[test]
fn tags_and_flags_outside_their_sets_are_refused() {
    let create_topic = |fsync_tag: u8| {
        payload(|buf| {
            put_string(buf, "t");
            buf.put_u32_le(1);
            buf.put_u8(fsync_tag);
            buf.put_u32_le(5); // interval, if tag 2
            buf.put_slice(&[0, 0, 0]);
        })
    };
    assert!(Request::decode(RequestKind::CreateTopic.code(), create_topic(2)).is_ok());
    assert_eq!(
        Request::decode(RequestKind::CreateTopic.code(), create_topic(3)),
        Err(DecodeError::InvalidValue {
            offset: 9,
            expected: "fsync policy (0 always, 1 os, 2 interval)",
            found: 3
        })
    );
    let subscribe = |mode: u8, start: u8, option: u8| {
        payload(|buf| {
            put_string(buf, "t");
            put_string(buf, "g");
            buf.put_u8(mode);
            buf.put_u8(start);
            buf.put_u32_le(10);
            buf.put_u8(option);
        })
    };
    assert!(Request::decode(RequestKind::Subscribe.code(), subscribe(1, 1, 0)).is_ok());
    assert!(matches!(
        Request::decode(RequestKind::Subscribe.code(), subscribe(2, 1, 0)),
        Err(DecodeError::InvalidValue {
            offset: 10,
            found: 2,
            ..
        })
    ));
    assert!(matches!(
        Request::decode(RequestKind::Subscribe.code(), subscribe(0, 4, 0)),
        Err(DecodeError::InvalidValue {
            offset: 11,
            found: 4,
            ..
        })
    ));
    assert!(matches!(
        Request::decode(RequestKind::Subscribe.code(), subscribe(0, 1, 2)),
        Err(DecodeError::InvalidValue {
            offset: 16,
            expected: "ack_timeout_ms option",
            found: 2
        })
    ));
    let nack = payload(|buf| {
        buf.put_u32_le(1);
        buf.put_u32_le(0);
        buf.put_u8(7); // requeue flag
        buf.put_u64_le(0);
        put_string(buf, "");
    });
    assert!(matches!(
        Request::decode(RequestKind::Nack.code(), nack),
        Err(DecodeError::InvalidValue {
            offset: 8,
            found: 7,
            ..
        })
    ));
    let published = payload(|buf| {
        buf.put_u32_le(0);
        buf.put_u8(2); // durability
    });
    assert!(matches!(
        Response::decode(ResponseKind::Published.code(), published),
        Err(DecodeError::InvalidValue {
            offset: 4,
            found: 2,
            ..
        })
    ));
}

#[test]
fn bytes_after_the_last_field_are_refused() {
    assert_eq!(
        Request::decode(RequestKind::Ping.code(), Bytes::from_static(b"x")),
        Err(DecodeError::TrailingBytes {
            offset: 0,
            count: 1
        })
    );
    let unsubscribe = Bytes::from_static(&[1, 0, 0, 0, 0]);
    assert_eq!(
        Request::decode(RequestKind::Unsubscribe.code(), unsubscribe),
        Err(DecodeError::TrailingBytes {
            offset: 4,
            count: 1
        })
    );
    assert!(matches!(
        Response::decode(ResponseKind::Ok.code(), Bytes::from_static(&[0])),
        Err(DecodeError::TrailingBytes { .. })
    ));
}

fn publish_payload(batch: &[u8]) -> Bytes {
    payload(|buf| {
        put_string(buf, "orders");
        buf.put_u8(0);
        buf.put_slice(batch);
    })
}

#[test]
fn a_publish_must_carry_exactly_one_whole_batch() {
    let batch = batch();
    let batch_at = 4 + 6 + 1;
    // Whole: accepted, and handed over as a slice of the payload.
    let whole = publish_payload(&batch);
    let Request::Publish { batch: decoded, .. } =
        Request::decode(RequestKind::Publish.code(), whole.clone()).unwrap()
    else {
        panic!("a publish")
    };
    assert_eq!(decoded, batch);
    assert_eq!(decoded.as_ptr(), whole[batch_at..].as_ptr(), "not copied");
    // Missing: truncated at the batch.
    assert!(matches!(
        Request::decode(RequestKind::Publish.code(), publish_payload(&[])),
        Err(DecodeError::Truncated { offset, expected: "record batch", .. }) if offset == batch_at
    ));
    // Cut short.
    assert!(matches!(
        Request::decode(RequestKind::Publish.code(), publish_payload(&batch[..batch.len() - 1])),
        Err(DecodeError::Truncated { needed, .. }) if needed == batch.len()
    ));
    // Followed by more bytes.
    let mut longer = batch.to_vec();
    longer.push(0);
    assert_eq!(
        Request::decode(RequestKind::Publish.code(), publish_payload(&longer)),
        Err(DecodeError::TrailingBytes {
            offset: batch_at + batch.len(),
            count: 1
        })
    );
    // Declaring a length shorter than a batch header.
    let mut lying = batch.to_vec();
    lying[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        Request::decode(RequestKind::Publish.code(), publish_payload(&lying)),
        Err(DecodeError::InvalidBatch { offset, .. }) if offset == batch_at
    ));
}

#[test]
fn a_publish_does_not_check_the_batch_crc_the_broker_does() {
    // The codec only frames the batch; validating records is the broker's job, done once.
    let mut corrupt = batch().to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(Request::decode(RequestKind::Publish.code(), publish_payload(&corrupt)).is_ok());
}

/// Goal: a peer declaring a frame over the limit is refused with only the length prefix
/// read, whatever follows. Method: a 100-byte limit, a frame of 101 declared bytes, buffered
/// in part and in whole.
#[test]
fn an_oversized_frame_is_refused_before_its_payload_arrives() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(97); // 4 + 97 = 101 bytes in all
    let expected = FrameError::TooLarge {
        length: 101,
        limit: 100,
    };
    assert_eq!(Frame::check(&buf, 100), Err(expected.clone()));
    buf.put_bytes(0, 97);
    assert_eq!(Frame::parse(&mut buf, 100), Err(expected));
    assert_eq!(buf.len(), 101, "nothing consumed");
    assert_eq!(Frame::check(&buf, 101), Ok(101));
}

#[test]
fn an_error_response_can_carry_a_code_this_build_does_not_know() {
    let mut buf = BytesMut::new();
    Response::Error {
        code: 9999,
        message: "from the future".into(),
    }
    .encode(5, &mut buf);
    let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
    let response = Response::decode(frame.kind, frame.payload).unwrap();
    assert_eq!(response.error_code(), None);
    assert_eq!(
        Response::error(ErrorCode::UnknownTopic).error_code(),
        Some(ErrorCode::UnknownTopic)
    );
    assert_eq!(
        Response::error(ErrorCode::StorageFull),
        Response::Error {
            code: 300,
            message: "storage full".into()
        }
    );
}

/// Goal: the server's streaming writer and the owned `Deliver` encode the same bytes, from
/// log records as from deliveries. Method: one batch through both paths.
#[test]
fn the_deliver_writer_encodes_records_like_the_enum() {
    let mut bytes = batch().to_vec();
    weir_batch::Batch::set_base_offset(&mut bytes, 40);
    let batch = weir_batch::Batch::parse(bytes.into(), 1 << 20).unwrap();
    let mut streamed = BytesMut::new();
    let mut writer = DeliverWriter::new(&mut streamed, 3);
    for record in batch.records() {
        let record = record.unwrap();
        let before = writer.frame_len();
        writer.push_record(2, 1, &record);
        assert_eq!(
            writer.frame_len() - before,
            DeliverWriter::record_len(&record)
        );
    }
    assert_eq!(writer.count(), 1);
    let frame_len = writer.finish();
    assert_eq!(frame_len, streamed.len());
    let messages: Vec<Delivery> = batch
        .records()
        .map(|record| Delivery::from_record(2, 1, record.unwrap()))
        .collect();
    assert_eq!(
        messages[0].id(),
        weir_proto::MessageId {
            partition: 2,
            offset: 40
        }
    );
    let mut owned = BytesMut::new();
    Response::Deliver {
        subscription: 3,
        messages,
    }
    .encode(0, &mut owned);
    assert_eq!(streamed, owned);
}

#[test]
fn a_deliver_writer_dropped_without_finish_still_leaves_a_valid_frame() {
    let mut buf = BytesMut::new();
    {
        let mut writer = DeliverWriter::new(&mut buf, 1);
        writer.push_parts(0, 1, 1, 0, Some(b"k"), &[], b"v");
        writer.push_parts(0, 2, 1, 0, None, &[], b"w");
    }
    let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(frame.correlation_id, 0, "deliveries are pushed unasked");
    let Response::Deliver { messages, .. } = Response::decode(frame.kind, frame.payload).unwrap()
    else {
        panic!("a deliver")
    };
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].key.as_deref(), Some(&b"k"[..]));
}

/// Goal: every tag the new operations added refuses values outside its set, at the tag's
/// own offset. Method: one hand-built payload per tag, with the tag one past its last value.
#[test]
fn the_tags_of_routing_scheduling_transactions_and_keys_are_checked() {
    let create_exchange = |kind: u8| {
        payload(|buf| {
            put_string(buf, "orders");
            buf.put_u8(kind);
            buf.put_u8(0);
        })
    };
    assert!(Request::decode(RequestKind::CreateExchange.code(), create_exchange(3)).is_ok());
    assert_eq!(
        Request::decode(RequestKind::CreateExchange.code(), create_exchange(4)),
        Err(DecodeError::InvalidValue {
            offset: 10,
            expected: "exchange kind (0 direct, 1 topic, 2 fanout, 3 headers)",
            found: 4
        })
    );
    let delayed = |when: u8| {
        let batch = batch();
        payload(move |buf| {
            put_string(buf, "t");
            buf.put_u8(0);
            buf.put_u8(when);
            buf.put_u64_le(30_000);
            buf.put_u8(0);
            buf.put_slice(&batch);
        })
    };
    assert!(Request::decode(RequestKind::PublishDelayed.code(), delayed(1)).is_ok());
    assert_eq!(
        Request::decode(RequestKind::PublishDelayed.code(), delayed(2)),
        Err(DecodeError::InvalidValue {
            offset: 6,
            expected: "schedule time (0 delay, 1 absolute time)",
            found: 2
        })
    );
    let cancel = payload(|buf| {
        buf.put_u8(2);
        buf.put_u64_le(7);
    });
    assert!(matches!(
        Request::decode(RequestKind::CancelScheduled.code(), cancel),
        Err(DecodeError::InvalidValue {
            offset: 0,
            found: 2,
            ..
        })
    ));
    let resolve = |decision: u8| {
        payload(|buf| {
            buf.put_u64_le(9);
            buf.put_u8(decision);
        })
    };
    assert!(Request::decode(RequestKind::ResolveTransaction.code(), resolve(2)).is_ok());
    assert_eq!(
        Request::decode(RequestKind::ResolveTransaction.code(), resolve(3)),
        Err(DecodeError::InvalidValue {
            offset: 8,
            expected: "decision (0 commit, 1 rollback, 2 unknown)",
            found: 3
        })
    );
    let bind = payload(|buf| {
        put_string(buf, "e");
        put_string(buf, "t");
        put_string(buf, "k");
        buf.put_u32_le(0);
        buf.put_u8(2); // match_all
    });
    assert!(matches!(
        Request::decode(RequestKind::Bind.code(), bind),
        Err(DecodeError::InvalidValue {
            offset: 19,
            found: 2,
            ..
        })
    ));
    let claimed = payload(|buf| {
        buf.put_u8(3);
        buf.put_i64_le(0);
    });
    assert!(matches!(
        Response::decode(ResponseKind::Claimed.code(), claimed),
        Err(DecodeError::InvalidValue {
            offset: 0,
            found: 3,
            ..
        })
    ));
    let transactions = payload(|buf| {
        buf.put_u32_le(1);
        buf.put_u64_le(1);
        put_string(buf, "g");
        buf.put_u8(2); // state
        buf.put_slice(&[0; 16]);
    });
    assert!(matches!(
        Response::decode(ResponseKind::Transactions.code(), transactions),
        Err(DecodeError::InvalidValue {
            offset: 17,
            expected: "transaction state (0 open, 1 committing)",
            found: 2
        })
    ));
}

/// Goal: the queue settings block is checked field by field: its overflow tag, its flag and
/// its backoff count. Method: a valid `SubscribeWithSettings`, then one field spoilt at a time.
#[test]
fn queue_settings_refuse_bad_tags_and_impossible_counts() {
    let settings_at = 4 + 1 + 4 + 1 + 1 + 1 + 4 + 1;
    let subscribe = |ordered: u8, backoff_count: u32, overflow: u8| {
        payload(|buf| {
            put_string(buf, "t");
            put_string(buf, "g");
            buf.put_u8(1); // queue
            buf.put_u8(0); // earliest
            buf.put_u32_le(10);
            buf.put_u8(0); // no ack timeout
            buf.put_u8(0); // max_deliveries
            buf.put_u8(0); // dead_letter_topic
            buf.put_u8(0); // message_ttl_ms
            buf.put_u8(ordered);
            buf.put_u32_le(backoff_count);
            buf.put_u64_le(1000);
            buf.put_u8(0); // max_backlog
            buf.put_u8(overflow);
        })
    };
    let code = RequestKind::SubscribeWithSettings.code();
    let Ok(Request::SubscribeWithSettings { settings, .. }) =
        Request::decode(code, subscribe(1, 1, 1))
    else {
        panic!("a valid subscribe with settings")
    };
    assert!(settings.ordered_by_key);
    assert_eq!(settings.retry_backoff_ms, [1000]);
    assert_eq!(settings.overflow, weir_proto::Overflow::DeadLetterOldest);
    assert!(matches!(
        Request::decode(code, subscribe(2, 1, 0)),
        Err(DecodeError::InvalidValue { offset, found: 2, .. }) if offset == settings_at + 3
    ));
    assert!(matches!(
        Request::decode(code, subscribe(0, 2, 0)),
        Err(DecodeError::CountTooLarge {
            expected: "retry backoff list",
            count: 2,
            needed: 16,
            available: 10,
            ..
        })
    ));
    assert!(matches!(
        Request::decode(code, subscribe(0, 1, 2)),
        Err(DecodeError::InvalidValue {
            expected: "overflow policy (0 reject publish, 1 dead-letter oldest)",
            found: 2,
            ..
        })
    ));
    // A plain `Subscribe` payload is not a `SubscribeWithSettings`: the settings are not
    // optional within their kind.
    let plain = payload(|buf| {
        put_string(buf, "t");
        put_string(buf, "g");
        buf.put_slice(&[1, 0, 10, 0, 0, 0, 0]);
    });
    assert!(matches!(
        Request::decode(code, plain),
        Err(DecodeError::Truncated {
            expected: "max_deliveries option",
            ..
        })
    ));
}

/// Goal: every request that carries a batch carries exactly one, at the end, like `Publish`.
#[test]
fn requests_with_a_batch_need_exactly_one_whole_batch() {
    let batch = batch();
    // Each kind with the fields before its batch.
    let cases = [
        (
            RequestKind::PublishToExchange,
            payload(|buf| {
                put_string(buf, "e");
                put_string(buf, "k");
                buf.put_u8(1);
            }),
        ),
        (
            RequestKind::SendHalf,
            payload(|buf| {
                buf.put_u64_le(1);
                put_string(buf, "t");
                buf.put_u8(0);
            }),
        ),
        (
            RequestKind::PublishReportingDuplicates,
            payload(|buf| {
                put_string(buf, "t");
                buf.put_u8(0);
            }),
        ),
    ];
    for (kind, head) in cases {
        let with = |tail: &[u8]| {
            payload(|buf| {
                buf.put_slice(&head);
                buf.put_slice(tail);
            })
        };
        assert!(Request::decode(kind.code(), with(&batch)).is_ok(), "{kind}");
        assert!(
            matches!(
                Request::decode(kind.code(), with(&[])),
                Err(DecodeError::Truncated {
                    expected: "record batch",
                    ..
                })
            ),
            "{kind}"
        );
        let mut longer = batch.to_vec();
        longer.push(0);
        assert!(
            matches!(
                Request::decode(kind.code(), with(&longer)),
                Err(DecodeError::TrailingBytes { count: 1, .. })
            ),
            "{kind}"
        );
    }
}

/// Goal: the lists inside the new responses refuse counts the payload cannot hold, before
/// allocating: dead letters, exchanges with bindings, statistics.
#[test]
fn counts_in_the_new_responses_are_refused_before_allocating() {
    let dead_letters = payload(|buf| buf.put_u32_le(u32::MAX));
    assert!(matches!(
        Response::decode(ResponseKind::DeadLetters.code(), dead_letters),
        Err(DecodeError::CountTooLarge {
            expected: "dead letter list",
            available: 0,
            ..
        })
    ));
    let exchange = payload(|buf| {
        put_string(buf, "e");
        buf.put_u8(1);
        buf.put_u8(0);
        buf.put_u32_le(1_000_000); // bindings
        buf.put_slice(&[0; 12]);
    });
    assert!(matches!(
        Response::decode(ResponseKind::Exchange.code(), exchange),
        Err(DecodeError::CountTooLarge {
            expected: "binding list",
            count: 1_000_000,
            ..
        })
    ));
    let stats = payload(|buf| {
        buf.put_slice(&[0; 8 * 5 + 32]);
        buf.put_u32_le(0); // topics
        buf.put_u32_le(1); // subscriptions
        buf.put_slice(&[0; 10]);
    });
    assert!(matches!(
        Response::decode(ResponseKind::Stats.code(), stats),
        Err(DecodeError::CountTooLarge {
            expected: "subscription statistics list",
            count: 1,
            ..
        })
    ));
    let redrive = payload(|buf| {
        put_string(buf, "dlq");
        buf.put_u8(0);
        buf.put_u8(1);
        buf.put_u32_le(5); // ids
        buf.put_u32_le(10);
    });
    assert!(matches!(
        Request::decode(RequestKind::Redrive.code(), redrive),
        Err(DecodeError::CountTooLarge {
            expected: "message id list",
            count: 5,
            ..
        })
    ));
}

/// Goal: the check-back push decodes only whole: a transaction id and its producer group.
#[test]
fn a_check_transaction_push_cut_short_is_truncated() {
    let check = payload(|buf| {
        buf.put_u64_le(42);
        buf.put_u32_le(8);
        buf.put_slice(b"orders");
    });
    assert_eq!(
        Response::decode(ResponseKind::CheckTransaction.code(), check),
        Err(DecodeError::Truncated {
            offset: 12,
            expected: "producer group",
            needed: 8,
            available: 6
        })
    );
}

/// Goal: an alert decodes only with known tags and finite numbers, and a lying alert count is
/// refused before allocating.
#[test]
fn alerts_refuse_unknown_tags_non_finite_numbers_and_lying_counts() {
    let alert = |metric: u8, state: u8, value: f64| {
        payload(|buf| {
            buf.put_u32_le(1);
            put_string(buf, "backlog-high");
            put_string(buf, "orders/shipping");
            buf.put_u8(metric);
            buf.put_u8(state);
            buf.put_f64_le(value);
            buf.put_f64_le(10_000.0);
            buf.put_i64_le(1_700_000_000_000);
            put_string(buf, "add consumers");
        })
    };
    let kind = ResponseKind::Alerts.code();
    assert!(matches!(
        Response::decode(kind, alert(0, 1, 12_000.0)),
        Ok(Response::Alerts(alerts)) if alerts.len() == 1 && alerts[0].value == 12_000.0
    ));
    // The metric tag sits after the count and two strings: 4 + (4 + 12) + (4 + 15).
    assert!(matches!(
        Response::decode(kind, alert(7, 1, 12_000.0)),
        Err(DecodeError::InvalidValue {
            offset: 39,
            found: 7,
            ..
        })
    ));
    assert!(matches!(
        Response::decode(kind, alert(0, 2, 12_000.0)),
        Err(DecodeError::InvalidValue {
            offset: 40,
            found: 2,
            ..
        })
    ));
    let nan = alert(0, 1, f64::NAN);
    assert_eq!(
        Response::decode(kind, nan),
        Err(DecodeError::InvalidValue {
            offset: 41,
            expected: "alert value (a finite f64)",
            found: f64::NAN.to_bits(),
        })
    );
    let lying = payload(|buf| {
        buf.put_u32_le(1_000_000);
        buf.put_slice(&[0; 38]);
    });
    assert!(matches!(
        Response::decode(kind, lying),
        Err(DecodeError::CountTooLarge {
            expected: "alert list",
            count: 1_000_000,
            ..
        })
    ));
}
