//! A subscription's delivery task: fetch from the consumer, write `Deliver` frames, repeat.
//!
//! Flow control is the core's and the channel's, not this task's: a queue consumer holds at
//! most `prefetch` unacked deliveries (the core stops handing out more until acks free
//! credit), and for every kind the bounded writer channel makes this task wait while the peer
//! is not reading. Records go from the log's buffers into the frame through
//! [`DeliverWriter::push_record`], with no `Delivery` built in between. The task ends when the
//! consumer fails (topic deleted, broker stopping) or the writer is gone; it is aborted when
//! the subscription is closed, and whatever it had fetched is then released by the consumer's
//! drop.
//!
//! Every `Deliver` frame stays within the frame limit: deliveries are split over frames of at
//! most [`DELIVER_FRAME_TARGET_BYTES`], and a message that could not fit even alone (its
//! encoding can be larger than the batch it was published in: each header costs 8 bytes on
//! the wire) is refused rather than sent: the peer would drop the connection on it and get it
//! again on reconnecting, forever. A queue subscription dead-letters it (rejected, the reason
//! kept as the dead letter's error), a stream subscription skips it; either is logged as a
//! warning. The peer is not sent an error: an unasked error ends its subscription (see
//! `docs/protocol.md`), and this one goes on.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use weir_core::{Consumer, Delivery, SubscriptionKind};
use weir_proto::{DeliverWriter, Response};

use super::connection::{DELIVER_FRAME_TARGET_BYTES, Outgoing};
use crate::error::public_error;

/// Most deliveries asked of the consumer at once, whatever the prefetch: one fetch is one
/// pass over the log under the subscription's lock, which should stay short.
pub(crate) const MAX_FETCH: u32 = 4096;

/// Bytes one delivery adds to a `Deliver` frame, as `weir-proto` lays it out: partition,
/// offset, delivery count, timestamp, key tag, header count and value length, then the
/// variable parts.
fn encoded_len(delivery: &Delivery) -> usize {
    let record = &delivery.record;
    4 + 8
        + 4
        + 8
        + 1
        + 4
        + 4
        + record.key.as_ref().map_or(0, |key| 4 + key.len())
        + record
            .headers
            .iter()
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum::<usize>()
        + record.value.len()
}

/// Runs until the consumer fails or the writer is gone.
pub(crate) async fn deliver(
    subscription: u32,
    consumer: Arc<Consumer>,
    outgoing: Outgoing,
    fetch_max: usize,
    max_frame_bytes: usize,
) {
    let frame_target = DELIVER_FRAME_TARGET_BYTES.min(max_frame_bytes);
    let mut buffer = BytesMut::new();
    let empty_frame = DeliverWriter::new(&mut buffer, subscription).frame_len();
    buffer.clear();
    loop {
        let deliveries = match consumer.next(fetch_max).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                // Told with correlation id 0: no request asked for this. The connection stays
                // open; the peer may resubscribe.
                let (code, message) = public_error(&error);
                let response = Response::error_with(
                    code,
                    format!("subscription {subscription} ended: {message}"),
                );
                let _ = outgoing.send_response(&mut buffer, 0, &response).await;
                tracing::debug!(subscription, %error, "subscription ended");
                return;
            }
        };
        let (deliveries, too_large): (Vec<_>, Vec<_>) = deliveries
            .into_iter()
            .partition(|delivery| empty_frame + encoded_len(delivery) <= max_frame_bytes);
        for delivery in &too_large {
            refuse(
                &consumer,
                subscription,
                delivery,
                empty_frame,
                max_frame_bytes,
            )
            .await;
        }
        let mut rest = &deliveries[..];
        while !rest.is_empty() {
            let mut writer = DeliverWriter::new(&mut buffer, subscription);
            let mut taken = 0;
            for delivery in rest {
                // The first delivery always goes in, so a record bigger than the target still
                // leaves, alone in its frame.
                if taken > 0 && writer.frame_len() + encoded_len(delivery) > frame_target {
                    break;
                }
                writer.push_record(
                    delivery.partition,
                    delivery.delivery_count,
                    &delivery.record,
                );
                taken += 1;
            }
            writer.finish();
            rest = &rest[taken..];
            if outgoing.send_frame(buffer.split().freeze()).await.is_err() {
                return;
            }
        }
    }
}

/// Takes a delivery that cannot fit in a frame out of the subscription (dead-lettered, or
/// skipped on a stream) and logs why.
async fn refuse(
    consumer: &Consumer,
    subscription: u32,
    delivery: &Delivery,
    empty_frame: usize,
    max_frame_bytes: usize,
) {
    let record = &delivery.record;
    let reason = format!(
        "the message at partition {} offset {} ({} bytes of value, {} headers) would make a delivery frame of {} bytes, over the frame limit of {max_frame_bytes}",
        delivery.partition,
        record.offset,
        record.value.len(),
        record.headers.len(),
        empty_frame + encoded_len(delivery),
    );
    let refused = consumer
        .nack_with_error(&[delivery.id()], false, Duration::ZERO, &reason)
        .await;
    let outcome = match refused {
        Ok(_) => match consumer.kind() {
            SubscriptionKind::Queue => {
                "rejected (dead-lettered if the subscription has a dead-letter topic)"
            }
            SubscriptionKind::Stream => "skipped",
        },
        Err(error) => {
            tracing::warn!(subscription, %error, "could not refuse an undeliverable message");
            "left in flight"
        }
    };
    tracing::warn!(
        subscription,
        topic = consumer.topic(),
        group = consumer.group(),
        "{reason}; {outcome}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use weir_batch::Record;

    /// Goal: the size estimate that splits frames matches what the codec writes, so frames
    /// stay under their target. Method: write one delivery and compare.
    #[test]
    fn the_size_estimate_matches_the_encoding() {
        let delivery = Delivery {
            partition: 3,
            delivery_count: 2,
            record: Record {
                offset: 9,
                timestamp_ms: 1,
                key: Some(Bytes::from_static(b"key")),
                headers: vec![("name".into(), Bytes::from_static(b"value"))],
                value: Bytes::from_static(b"payload"),
            },
        };
        let mut buffer = BytesMut::new();
        let mut writer = DeliverWriter::new(&mut buffer, 1);
        let empty = writer.frame_len();
        writer.push_record(
            delivery.partition,
            delivery.delivery_count,
            &delivery.record,
        );
        assert_eq!(writer.frame_len() - empty, encoded_len(&delivery));
    }
}
