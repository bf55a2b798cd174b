//! Decoupling: order created → notification service, with manual ack.
//!
//! The order service publishes one event per order and is done. The notification service
//! acks an event only once the notification went out; when sending fails it nacks with
//! requeue, and the broker delivers the event again a little later (note the delivery count).
//!
//! Run `weir serve`, then: `cargo run -p weir-client --example order_notification`
//! (`--server HOST:PORT` or `WEIR_SERVER` to reach another broker).

use std::time::Duration;

use weir_client::{
    Client, Delivery, ErrorCode, Message, ProducerOptions, SubscribeOptions, TopicOptions,
};

const TOPIC: &str = "order.created";

/// Sending a notification; the SMS gateway is flaky for order 1003 the first time.
async fn send_notification(delivery: &Delivery) -> Result<(), String> {
    let order = String::from_utf8_lossy(&delivery.value);
    if order.contains("1003") && delivery.delivery_count == 1 {
        return Err("sms gateway timed out".into());
    }
    println!(
        "notification sent for {order} (delivery #{})",
        delivery.delivery_count
    );
    Ok(())
}

#[tokio::main]
async fn main() -> weir_client::Result<()> {
    let client = Client::connect(&server_address()).await?;
    match client.create_topic(TOPIC, TopicOptions::default()).await {
        Err(error) if error.code() != Some(ErrorCode::TopicExists) => return Err(error),
        _ => {}
    }

    // Order service: publish and move on.
    let producer = client.producer(ProducerOptions::default());
    let orders = [
        "order 1001: 2 books",
        "order 1002: 1 lamp",
        "order 1003: 3 mugs",
    ];
    for order in orders {
        producer.send(TOPIC, Message::new(order)).await?.await?;
        println!("order service: created {order}");
    }

    // Notification service: ack on success, nack + requeue on failure.
    let options = SubscribeOptions {
        prefetch: 10,
        ack_timeout: Some(Duration::from_secs(30)),
        ..SubscribeOptions::queue()
    };
    let mut consumer = client
        .subscribe(TOPIC, "notification-service", options)
        .await?;
    let mut notified = 0;
    while notified < orders.len() {
        let delivery = consumer.next().await?;
        match send_notification(&delivery).await {
            Ok(()) => {
                consumer.ack_one(&delivery).await?;
                notified += 1;
            }
            Err(error) => {
                println!("notification failed ({error}); retrying in 500 ms");
                consumer
                    .nack_one(&delivery, true, Duration::from_millis(500), &error)
                    .await?;
            }
        }
    }
    consumer.close().await
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
