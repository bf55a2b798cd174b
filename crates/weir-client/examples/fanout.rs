//! Publish/subscribe: one producer, three subscribers.
//!
//! Email, SMS and audit each have their own subscription (group) on the same topic, so each
//! receives every message. Consumers that share one group would instead split the messages
//! between them (a work queue).
//!
//! Run `weir serve`, then: `cargo run -p weir-client --example fanout`
//! (`--server HOST:PORT` or `WEIR_SERVER` to reach another broker).

use weir_client::{Client, ErrorCode, Message, ProducerOptions, SubscribeOptions, TopicOptions};

const TOPIC: &str = "order.paid";

#[tokio::main]
async fn main() -> weir_client::Result<()> {
    let client = Client::connect(&server_address()).await?;
    match client.create_topic(TOPIC, TopicOptions::default()).await {
        Err(error) if error.code() != Some(ErrorCode::TopicExists) => return Err(error),
        _ => {}
    }
    let events = ["order 1001 paid", "order 1002 paid", "order 1003 paid"];

    // Three subscriptions, each joined before anything is published.
    let mut subscribers = Vec::new();
    for group in ["email", "sms", "audit"] {
        let mut consumer = client
            .subscribe(TOPIC, group, SubscribeOptions::queue())
            .await?;
        subscribers.push(tokio::spawn(async move {
            for _ in 0..events.len() {
                let delivery = consumer.next().await?;
                println!("{group:>5}: {}", String::from_utf8_lossy(&delivery.value));
                consumer.ack_one(&delivery).await?;
            }
            consumer.close().await
        }));
    }

    // One producer.
    let producer = client.producer(ProducerOptions::default());
    for event in events {
        producer.send(TOPIC, Message::new(event)).await?;
    }
    producer.flush().await?; // waits for every confirm

    for subscriber in subscribers {
        subscriber
            .await
            .map_err(|error| weir_client::Error::InvalidArgument(error.to_string()))??;
    }
    Ok(())
}

/// The broker: `--server HOST:PORT`, else `WEIR_SERVER`, else `127.0.0.1:5680`.
fn server_address() -> String {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .windows(2)
        .find(|pair| pair[0] == "--server")
        .map(|pair| pair[1].clone())
        .unwrap_or_else(weir_client::default_server_address)
}
