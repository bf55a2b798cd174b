//! Asynchronous processing: user registration.
//!
//! The web handler stores the user, publishes "user registered" and answers at once; a
//! worker sends the welcome email in the background. The handler waits for the broker's
//! durable confirm (about one fsync), never for the email.
//!
//! Run `weir serve`, then: `cargo run -p weir-client --example user_registration`
//! (`--server HOST:PORT` or `WEIR_SERVER` to reach another broker).

use std::time::{Duration, Instant};

use weir_client::{
    Client, ErrorCode, Message, Producer, ProducerOptions, SubscribeOptions, TopicOptions,
};

const TOPIC: &str = "user.registered";

/// The web handler: save the user, announce it, return.
async fn register(producer: &Producer, email: &str) -> weir_client::Result<&'static str> {
    // db.save(user) would go here.
    let confirm = producer
        .send(
            TOPIC,
            Message::new(email.to_owned()).with_key(email.to_owned()),
        )
        .await?;
    confirm.await?; // durable on the broker; the email is someone else's job now
    Ok("registration successful")
}

/// The worker: one welcome email per registration.
async fn welcome_email_worker(client: Client, expected: usize) -> weir_client::Result<()> {
    let mut consumer = client
        .subscribe(TOPIC, "welcome-email", SubscribeOptions::queue())
        .await?;
    for _ in 0..expected {
        let delivery = consumer.next().await?;
        let email = String::from_utf8_lossy(&delivery.value);
        tokio::time::sleep(Duration::from_millis(200)).await; // talking to the mail server
        println!("worker: welcome email sent to {email}");
        consumer.ack_one(&delivery).await?;
    }
    consumer.close().await
}

#[tokio::main]
async fn main() -> weir_client::Result<()> {
    let client = Client::connect(&server_address()).await?;
    match client.create_topic(TOPIC, TopicOptions::default()).await {
        Err(error) if error.code() != Some(ErrorCode::TopicExists) => return Err(error),
        _ => {}
    }
    let users = ["ada@example.com", "grace@example.com", "linus@example.com"];
    let worker = tokio::spawn(welcome_email_worker(client.clone(), users.len()));

    let producer = client.producer(ProducerOptions::default());
    for email in users {
        let started = Instant::now();
        let answer = register(&producer, email).await?;
        println!("handler: {email}: {answer} in {:?}", started.elapsed());
    }
    worker
        .await
        .map_err(|error| weir_client::Error::InvalidArgument(error.to_string()))?
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
