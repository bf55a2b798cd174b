//! Black-box: `GET /metrics` of the real binary counts the HTTP listener's own traffic as
//! `listener="http"`, apart from the native listener's: its connections, and exactly the bytes
//! that crossed them. The exposition's families and their numbers are covered in depth by
//! `crates/weir-server/tests/metrics.rs`.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use util::{PATIENCE, Weir};

const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

/// Sends `request` on a connection of its own and reads until the server closes it (every
/// request here says `connection: close`): every byte the server sent.
fn exchange(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).expect("connects to the http listener");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    stream.write_all(request).expect("sends");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("reads the answer");
    answer
}

/// The value of the sample `name{listener="LISTENER"}` in a `/metrics` answer.
fn sample(answer: &str, name: &str, listener: &str) -> u64 {
    let prefix = format!("{name}{{listener=\"{listener}\"}} ");
    answer
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}sample in:\n{answer}"))
}

#[test]
fn http_requests_are_counted_under_listener_http() {
    let weir = Weir::start();
    let http = weir.http_address();

    let before = exchange(http, SCRAPE);
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    let create = br#"{"name": "orders"}"#;
    let request = [
        format!(
            "POST /v1/topics HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            create.len()
        )
        .into_bytes(),
        create.to_vec(),
    ]
    .concat();
    let created = exchange(http, &request);
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let after = exchange(http, SCRAPE);

    // Between the two scrapes: the create and the second scrape were accepted and read whole;
    // the first scrape's answer and the create's answer were written whole. (A scrape renders
    // after reading its own request and before writing its answer.)
    let grew = |name: &str| sample(&after, name, "http") - sample(&before, name, "http");
    assert_eq!(grew("weir_connections_accepted_total"), 2);
    assert_eq!(
        grew("weir_received_bytes_total"),
        (request.len() + SCRAPE.len()) as u64
    );
    assert_eq!(
        grew("weir_sent_bytes_total"),
        (before.len() + created.len()) as u64
    );
    assert!(sample(&after, "weir_connections_open", "http") >= 1);
    // None of it is the native listener's.
    assert_eq!(
        sample(&after, "weir_connections_accepted_total", "native"),
        0
    );
    assert_eq!(sample(&after, "weir_received_bytes_total", "native"), 0);
}
