//! A scripted stand-in for the broker, for unit tests of the connection, producer and
//! consumer without a real server.
//!
//! It speaks the real wire format (`weir-proto`), answers the hello itself, and hands every
//! other request to a closure that returns the frames to send back. Test-only; it checks
//! nothing about the broker's semantics.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_proto::{DEFAULT_MAX_FRAME_BYTES, Frame, FrameError, Request, Response};

/// What a script returns for one request: frames to send (correlation id, response), or
/// `None` to close the connection.
pub(crate) type Answers = Option<Vec<(u64, Response)>>;

/// Starts a server on a free port and returns its address. `answer` is called with the
/// connection's number (0 for the first accepted), the request's correlation id, and the
/// request.
pub(crate) async fn scripted_server(
    answer: impl FnMut(usize, u64, Request) -> Answers + Send + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("a bound address").to_string();
    let answer = Arc::new(Mutex::new(answer));
    tokio::spawn(async move {
        let mut connection_number = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            let number = connection_number;
            connection_number += 1;
            tokio::spawn(async move {
                let mut buffer = BytesMut::new();
                loop {
                    let frame = match Frame::parse(&mut buffer, DEFAULT_MAX_FRAME_BYTES) {
                        Ok(frame) => frame,
                        Err(FrameError::Incomplete { .. }) => {
                            if stream.read_buf(&mut buffer).await.unwrap_or(0) == 0 {
                                return;
                            }
                            continue;
                        }
                        Err(error) => panic!("the client sent a bad frame: {error}"),
                    };
                    let request =
                        Request::decode(frame.kind, frame.payload).expect("a valid request");
                    let answers = if let Request::Hello { .. } = request {
                        Some(vec![(
                            frame.correlation_id,
                            Response::HelloOk {
                                version: 1,
                                server_name: "scripted".into(),
                                max_frame_bytes: 1 << 20,
                            },
                        )])
                    } else {
                        let mut answer = answer.lock().expect("no script panicked");
                        answer(number, frame.correlation_id, request)
                    };
                    let Some(answers) = answers else { return };
                    let mut out = BytesMut::new();
                    for (correlation_id, response) in answers {
                        response.encode(correlation_id, &mut out);
                    }
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}
