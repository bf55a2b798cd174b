//! Micro-benchmarks of the codec's hot paths: a `Deliver` of 1000 messages of 100 bytes
//! (the consume side of workloads W2 and W4) and a `Publish` of a 1000-message batch (W1).
//! Throughput is reported in messages, so the numbers compare with the per-message targets.
//!
//! Run: `cargo bench -p weir-proto --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use weir_batch::BatchBuilder;
use weir_proto::{
    DEFAULT_MAX_FRAME_BYTES, DeliverWriter, Delivery, FRAME_HEADER_LEN, Frame, LENGTH_PREFIX_LEN,
    Request, Response,
};

const MESSAGES: usize = 1000;
const VALUE_BYTES: usize = 100;

fn deliveries() -> Vec<Delivery> {
    (0..MESSAGES)
        .map(|index| Delivery {
            partition: 0,
            offset: 1_000_000 + index as u64,
            delivery_count: 1,
            timestamp_ms: 1_700_000_000_000 + i64::try_from(index).expect("small"),
            key: None,
            headers: Vec::new(),
            value: Bytes::from(vec![b'x'; VALUE_BYTES]),
        })
        .collect()
}

fn batch() -> Bytes {
    let mut builder = BatchBuilder::with_capacity(MESSAGES * (VALUE_BYTES + 8));
    let value = [b'x'; VALUE_BYTES];
    for index in 0..MESSAGES {
        builder.push(
            1_700_000_000_000 + i64::try_from(index).expect("small"),
            None,
            &[],
            &value,
        );
    }
    builder.finish()
}

/// The frame's kind, after checking it is one whole frame (as the connection would).
fn kind(frame: &Bytes) -> u8 {
    let length = Frame::check(frame, DEFAULT_MAX_FRAME_BYTES).expect("a whole frame");
    assert_eq!(length, frame.len());
    frame[LENGTH_PREFIX_LEN]
}

/// The payload as a slice of the frame: decoding is measured without copying the input
/// first, as a connection hands the decoder a slice of its read buffer.
fn payload(frame: &Bytes) -> Bytes {
    frame.slice(FRAME_HEADER_LEN..)
}

fn deliver(criterion: &mut Criterion) {
    let deliveries = deliveries();
    let mut group = criterion.benchmark_group("deliver_1000x100B");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let mut buf = BytesMut::with_capacity(256 * 1024);
    group.bench_function("encode", |bencher| {
        bencher.iter(|| {
            buf.clear();
            let mut writer = DeliverWriter::new(&mut buf, 1);
            for delivery in &deliveries {
                writer.push(black_box(delivery));
            }
            black_box(writer.finish())
        });
    });
    let mut encoded = BytesMut::new();
    Response::Deliver {
        subscription: 1,
        messages: deliveries.clone(),
    }
    .encode(0, &mut encoded);
    let encoded = encoded.freeze();
    group.bench_function("decode", |bencher| {
        bencher.iter(|| {
            black_box(Response::decode(kind(&encoded), payload(&encoded)).expect("a valid deliver"))
        });
    });
    group.finish();
}

fn publish(criterion: &mut Criterion) {
    let batch = batch();
    let mut group = criterion.benchmark_group("publish_1000x100B");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let mut buf = BytesMut::with_capacity(256 * 1024);
    group.bench_function("encode", |bencher| {
        bencher.iter(|| {
            buf.clear();
            Request::encode_publish(7, "orders", None, black_box(&batch), &mut buf);
            black_box(buf.len())
        });
    });
    let mut encoded = BytesMut::new();
    Request::encode_publish(7, "orders", None, &batch, &mut encoded);
    let encoded = encoded.freeze();
    group.bench_function("decode", |bencher| {
        bencher.iter(|| {
            black_box(Request::decode(kind(&encoded), payload(&encoded)).expect("a valid publish"))
        });
    });
    group.finish();
}

criterion_group!(benches, deliver, publish);
criterion_main!(benches);
