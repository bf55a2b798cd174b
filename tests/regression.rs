//! One test per bug found by the black-box tests, each reduced to the least that shows it,
//! against the real `weir serve` through `weir-client`. A test stays here after its fix.

mod util;

use std::time::Duration;

use util::{PATIENCE, Weir};
use weir_batch::MESSAGE_ID_HEADER;
use weir_client::{Client, Fsync, Message, ProducerOptions, TopicOptions};

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("done in time")
}

/// Goal: a message published again with a message id the broker already stored (what a
/// producer's retry after a lost confirm does) is confirmed at the stored copy's position, not
/// failed. Method: publish `payment-1` with id `p-1` and a confirm; publish the same message
/// again; the second confirm must name the first one's partition and offset, and the topic
/// must hold one copy.
///
/// Found by `tests/crash.rs`. The second confirm used to fail with "protocol error: the batch
/// of 1 messages to 'payments' was stored, but its confirm ([]) cannot be matched to its
/// messages": the broker recognised the duplicate, but the plain `Published` answer has no
/// field for where the copy is, so the answer to an all-duplicate batch named no position.
/// Fixed by publishing with `PublishReportingDuplicates` (answered `PublishedWithDuplicates`)
/// and placing each duplicate at the copy it names (`weir-client` `confirm.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_again_with_its_id_is_confirmed_at_the_stored_copy() {
    let weir = Weir::start();
    let client = Client::connect(&weir.address.to_string()).await.unwrap();
    let options = TopicOptions {
        partitions: 1,
        fsync: Fsync::Os,
        ..TopicOptions::default()
    };
    client.create_topic("payments", options).await.unwrap();
    let producer = client.producer(ProducerOptions {
        linger: Duration::ZERO,
        ..ProducerOptions::default()
    });
    let message = Message::new("payment-1").with_header(MESSAGE_ID_HEADER, "p-1");
    let first = within(producer.send_confirmed("payments", message.clone()))
        .await
        .expect("the first publish is confirmed");
    let again = within(producer.send_confirmed("payments", message))
        .await
        .expect("the duplicate is confirmed too");
    assert_eq!(
        (again.partition, again.offset),
        (first.partition, first.offset)
    );
    assert!(again.duplicate, "the confirm says it was not stored again");
    let topic = client.topic("payments").await.unwrap();
    assert_eq!(topic.partitions[0].end_offset, 1, "one copy is stored");
}
