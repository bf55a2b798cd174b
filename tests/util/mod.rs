//! The black-box harness: start the real `weir` binary on a free port with a temporary data
//! directory, talk to it as a client would, stop it by signal, start it again on the same data.
//!
//! [`Weir::start`] runs `weir serve --native-addr 127.0.0.1:0 --data-dir <tempdir>` and reads
//! its stderr until the `native listener on ADDR` line to learn the port; a thread keeps
//! draining stderr afterwards (a full pipe would stall the server's logging) and keeps the text
//! for failure messages. The other listeners (HTTP, RESP) get free ports too, through their
//! `WEIR_*_ADDR` variables. [`Weir::restart`] starts again on the same data directory and a new
//! port; [`Weir::restart_on_same_address`] on the same port, for clients that reconnect by
//! themselves. The process is SIGKILLed when the [`Weir`] is dropped. [`Connection`]
//! is a blocking raw-protocol client over `weir-proto`, for tests that check the wire itself.
//!
//! Signals are sent with the `kill` utility rather than `libc::kill`: the workspace forbids
//! `unsafe` code, tests included.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use weir_proto::{Frame, FrameError, Request, Response};

/// How long to wait for the server to start, stop, or answer.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A listener address that lets the system pick a free port.
const ANY_PORT: &str = "127.0.0.1:0";

/// A running `weir serve`.
pub struct Weir {
    child: Child,
    /// The bound native address, as logged.
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    /// Extra arguments of `serve`, kept for restarts.
    extra_arguments: Vec<String>,
    /// Extra environment, kept for restarts.
    environment: Vec<(String, String)>,
    /// The open-files limit (soft and hard) the process starts with, kept for restarts.
    open_files_limit: Option<u64>,
    /// Everything the process wrote to stderr so far.
    log: Arc<Mutex<String>>,
    /// Owns the data directory when the harness made it; removed when the last user is done.
    _temporary: Option<Arc<tempfile::TempDir>>,
}

/// How to start a server.
#[derive(Default)]
pub struct Options {
    /// `serve` arguments after the harness's own.
    pub arguments: Vec<String>,
    /// Environment variables to set.
    pub environment: Vec<(String, String)>,
    /// Start under this open-files limit, soft and hard (`ulimit -n` in a shell that then
    /// execs the binary, so the pid is the server's), so `serve` cannot raise it.
    pub open_files_limit: Option<u64>,
}

impl Weir {
    /// Starts a server on a fresh temporary data directory.
    pub fn start() -> Weir {
        Weir::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Weir {
        let temporary = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        let data_dir = temporary.path().join("data");
        Weir::spawn(
            data_dir,
            ANY_PORT,
            options.arguments,
            options.environment,
            options.open_files_limit,
            Some(temporary),
        )
    }

    fn spawn(
        data_dir: PathBuf,
        native_address: &str,
        extra_arguments: Vec<String>,
        environment: Vec<(String, String)>,
        open_files_limit: Option<u64>,
        temporary: Option<Arc<tempfile::TempDir>>,
    ) -> Weir {
        let mut command = match open_files_limit {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_weir"));
                shell
            }
            None => Command::new(env!("CARGO_BIN_EXE_weir")),
        };
        command
            .arg("serve")
            .arg("--native-addr")
            .arg(native_address)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&extra_arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The HTTP listener's default port is fixed; tests run in parallel, so each takes a
        // free one unless it asks for something else.
        if !extra_arguments
            .iter()
            .any(|argument| argument.starts_with("--http-addr"))
        {
            command.arg("--http-addr").arg("127.0.0.1:0");
        }
        // The developer's own settings must not leak into the test: the harness depends on the
        // info-level listener line and on its own flags.
        command.env_remove("RUST_LOG");
        for (name, _) in std::env::vars() {
            if name.starts_with("WEIR_") {
                command.env_remove(name);
            }
        }
        // The other listeners default to fixed ports (DESIGN.md §4) and tests run in parallel:
        // each server picks free ones unless its test says otherwise. A variable the binary
        // does not know (a listener not built yet) is ignored.
        for name in ["WEIR_HTTP_ADDR", "WEIR_RESP_ADDR"] {
            command.env(name, ANY_PORT);
        }
        for (name, value) in &environment {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the weir binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, address) = mpsc::channel();
        let thread_log = log.clone();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, address)) = line.split_once("native listener on ")
                    && let Some(sender) = found.take()
                {
                    let _ = sender.send(address.trim().to_owned());
                }
                let mut log = thread_log.lock().unwrap_or_else(|error| error.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut weir = Weir {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            extra_arguments,
            environment,
            open_files_limit,
            log,
            _temporary: temporary,
        };
        match address.recv_timeout(PATIENCE) {
            Ok(address) => {
                weir.address = address.parse().unwrap_or_else(|error| {
                    panic!("bad listener address '{address}': {error}\n{}", weir.log())
                });
            }
            Err(_) => panic!(
                "no 'native listener on' line within {PATIENCE:?}; stderr:\n{}",
                weir.log()
            ),
        }
        weir
    }

    /// Starts a new server on the same data directory (and the same options), after this one
    /// has stopped. It listens on a new free port.
    pub fn restart(&mut self) {
        self.kill();
        let next = Weir::spawn(
            self.data_dir.clone(),
            ANY_PORT,
            self.extra_arguments.clone(),
            self.environment.clone(),
            self.open_files_limit,
            self._temporary.clone(),
        );
        *self = next;
    }

    /// Like [`Weir::restart`], but listening on the same native address as before, so that
    /// clients which reconnect by address (`weir-client` does) find the new server by
    /// themselves. The old listener is gone once the process has exited, and tokio binds with
    /// `SO_REUSEADDR`, so connections left in `TIME_WAIT` do not block the port.
    pub fn restart_on_same_address(&mut self) {
        self.kill();
        let address = self.address.to_string();
        let next = Weir::spawn(
            self.data_dir.clone(),
            &address,
            self.extra_arguments.clone(),
            self.environment.clone(),
            self.open_files_limit,
            self._temporary.clone(),
        );
        *self = next;
    }

    /// The HTTP listener's address, from the server's `http listener on ADDR` line (logged
    /// right after the native one [`Weir::start`] waits for).
    pub fn http_address(&self) -> SocketAddr {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(address) = self.log().lines().find_map(|line| {
                line.split_once("http listener on ")
                    .and_then(|(_, address)| address.trim().parse().ok())
            }) {
                return address;
            }
            assert!(
                Instant::now() < deadline,
                "no 'http listener on' line:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|error| error.into_inner())
            .clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// Sends a signal by name (`TERM`, `INT`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("the kill utility runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL: the process dies without a chance to flush anything. Waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for weir") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "weir did not exit within {PATIENCE:?}; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A connection that has completed the handshake.
    pub fn connect(&self) -> Connection {
        let mut connection = Connection::open(self.address);
        connection.hello();
        connection
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking raw-protocol client.
pub struct Connection {
    pub stream: TcpStream,
    buffer: BytesMut,
    next_correlation_id: u64,
}

impl Connection {
    /// Connects without a handshake.
    pub fn open(address: SocketAddr) -> Connection {
        let stream = TcpStream::connect(address).expect("connect to weir");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("a read timeout");
        Connection {
            stream,
            buffer: BytesMut::new(),
            next_correlation_id: 1,
        }
    }

    pub fn hello(&mut self) {
        let response = self.call(&Request::Hello {
            min_version: 1,
            max_version: 1,
            client_name: "weir black-box tests".into(),
        });
        assert!(
            matches!(response, Response::HelloOk { version: 1, .. }),
            "{response:?}"
        );
    }

    /// Sends a request; returns its correlation id.
    pub fn send(&mut self, request: &Request) -> u64 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut wire = BytesMut::new();
        request.encode(correlation_id, &mut wire);
        self.stream.write_all(&wire).expect("send to weir");
        correlation_id
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to weir");
    }

    /// The next frame, or `None` once the server has closed the connection.
    pub fn receive(&mut self) -> Option<(u64, Response)> {
        loop {
            match Frame::parse(&mut self.buffer, usize::MAX) {
                Ok(frame) => {
                    let response = Response::decode(frame.kind, frame.payload)
                        .expect("the server sends valid responses");
                    return Some((frame.correlation_id, response));
                }
                Err(FrameError::Incomplete { .. }) => {}
                Err(error) => panic!("the server sent a bad frame: {error}"),
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(self.buffer.is_empty(), "the stream ended inside a frame");
                    return None;
                }
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no answer from weir within {PATIENCE:?}")
                }
                // A reset after the last frame is an end too.
                Err(_) => return None,
            }
        }
    }

    /// Sends a request and returns its answer, skipping pushed frames (correlation id 0).
    pub fn call(&mut self, request: &Request) -> Response {
        let correlation_id = self.send(request);
        loop {
            let (answered, response) = self.receive().expect("an answer before the close");
            if answered == correlation_id {
                return response;
            }
            assert_eq!(
                answered, 0,
                "an answer to a request not asked: {response:?}"
            );
        }
    }
}

/// This machine's wall clock in milliseconds since the Unix epoch, as the broker's due times
/// are.
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("in range")
}
