//! ttrpc over one mux conn, written for the test harness from containerd/ttrpc
//! (`channel.go`, `client.go`, `server.go`, `request.proto`; v1.2).
//!
//! A message is a 10-byte header `u32 BE length | u32 BE stream id | u8 type | u8 flags`
//! and `length` bytes of protobuf: a [`Request`] (type 1) or a [`Response`] (type 2). Clients
//! number their streams 1, 3, 5, ...; a server answers on the request's stream id. A message
//! over 4 MiB is read and thrown away, and answered (or failed) with `ResourceExhausted`.
//!
//! What the Go client does and [`Client`] does too: it sends its deadline as `timeout_nano`,
//! gives up on its own when the deadline passes ([`CallError::DeadlineExceeded`], Go's
//! `context.DeadlineExceeded`), drops answers that come after that, and fails every waiting
//! call with [`CallError::Closed`] (Go's `ttrpc.ErrClosed`) when the connection ends.
//! What the Go server does and [`Server`] does too: an unknown service or method is answered
//! `Unimplemented`, an even stream id `InvalidArgument`, each request runs on its own.
//!
//! Not modelled: streaming calls and the flags they use, request metadata beyond passing it
//! to handlers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::mux::{ConnReceiver, Trunk};

/// Bytes of a message header.
pub const MESSAGE_HEADER_LEN: usize = 10;
/// Largest message payload ttrpc accepts.
pub const MAX_MESSAGE_LEN: usize = 4 << 20;
/// Message type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// Message type of a response.
pub const TYPE_RESPONSE: u8 = 2;

/// gRPC status codes, as ttrpc carries them.
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// What a Go handler's plain `error` becomes.
    pub const UNKNOWN: i32 = 2;
    /// A malformed request.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// The deadline passed.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// A message over the size limit.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// No such service or method.
    pub const UNIMPLEMENTED: i32 = 12;
}

/// `ttrpc.Request`.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// Fully qualified service name.
    #[prost(string, tag = "1")]
    pub service: String,
    /// Method name.
    #[prost(string, tag = "2")]
    pub method: String,
    /// The encoded request message.
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// The caller's remaining time, in nanoseconds (0: none).
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
    /// Request metadata.
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<KeyValue>,
}

/// `ttrpc.KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `ttrpc.Response`.
#[derive(Clone, PartialEq, Message)]
pub struct Response {
    /// The outcome; absent or code 0 is success.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// The encoded response message.
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// `google.rpc.Status` (without details).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Status {
    /// A [`code`].
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }

    /// What a Go handler returning a plain error answers: `Unknown` with its text.
    pub fn unknown(message: impl Into<String>) -> Self {
        Status::new(code::UNKNOWN, message)
    }
}

/// Why a call produced no response message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The server answered with a non-zero status.
    #[error("ttrpc status {code}: {message}")]
    Status {
        /// The status code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The caller's deadline passed before an answer came.
    #[error("no ttrpc answer within {0:?}")]
    DeadlineExceeded(Duration),
    /// The connection ended before an answer came.
    #[error("ttrpc connection closed: {0}")]
    Closed(String),
    /// The answer could not be decoded.
    #[error("ttrpc protocol error: {0}")]
    Protocol(String),
}

impl CallError {
    /// The status code, when the server answered with one.
    pub fn status_code(&self) -> Option<i32> {
        match self {
            CallError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// One message read from a conn.
enum Incoming {
    Message {
        stream: u32,
        kind: u8,
        payload: Bytes,
    },
    /// A message over [`MAX_MESSAGE_LEN`], skipped.
    Oversized {
        stream: u32,
        kind: u8,
        length: usize,
    },
}

/// Cuts a conn's byte stream into ttrpc messages.
struct MessageReader {
    conn: ConnReceiver,
    buffer: BytesMut,
}

impl MessageReader {
    fn new(conn: ConnReceiver) -> Self {
        MessageReader {
            conn,
            buffer: BytesMut::new(),
        }
    }

    /// Makes sure `n` bytes are buffered; `false` when the conn ended first.
    async fn fill(&mut self, n: usize) -> bool {
        while self.buffer.len() < n {
            match self.conn.recv().await {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return false,
            }
        }
        true
    }

    /// The next message; `None` when the conn ended (cleanly or inside a message).
    async fn next(&mut self) -> Option<Incoming> {
        if !self.fill(MESSAGE_HEADER_LEN).await {
            return None;
        }
        let mut header = self.buffer.split_to(MESSAGE_HEADER_LEN);
        let length = header.get_u32() as usize;
        let stream = header.get_u32();
        let kind = header.get_u8();
        let _flags = header.get_u8();
        if length > MAX_MESSAGE_LEN {
            // Read and discard, as Go's channel.recv does.
            let mut left = length;
            while left > 0 {
                if self.buffer.is_empty() && !self.fill(1).await {
                    return None;
                }
                let take = left.min(self.buffer.len());
                self.buffer.advance(take);
                left -= take;
            }
            return Some(Incoming::Oversized {
                stream,
                kind,
                length,
            });
        }
        if !self.fill(length).await {
            return None;
        }
        let payload = self.buffer.split_to(length).freeze();
        Some(Incoming::Message {
            stream,
            kind,
            payload,
        })
    }
}

/// Encodes one message with its header.
fn encode_message(stream: u32, kind: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(MESSAGE_HEADER_LEN + payload.len());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(payload);
    out.freeze()
}

type Waiters = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<Bytes, CallError>>>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A ttrpc client on one mux conn.
pub struct Client {
    trunk: Trunk,
    conn: u32,
    next_stream: AtomicU32,
    waiters: Waiters,
}

impl Client {
    /// A client on the conn `incoming` reads: requests go out on that conn of `trunk`, and
    /// answers come back on it.
    pub fn new(trunk: Trunk, incoming: ConnReceiver) -> Self {
        let conn = incoming.id;
        let waiters: Waiters = Arc::default();
        tokio::spawn(read_answers(
            MessageReader::new(incoming),
            waiters.clone(),
            trunk.clone(),
        ));
        Client {
            trunk,
            conn,
            next_stream: AtomicU32::new(1),
            waiters,
        }
    }

    /// Calls `service/method` with an encoded request; the call must be answered by
    /// `deadline`, which is also sent as `timeout_nano`.
    ///
    /// Errors: the server's status, the deadline, the connection's end, an undecodable
    /// answer.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<Bytes, CallError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let stream = self.next_stream.fetch_add(2, Ordering::Relaxed);
        let request = Request {
            service: service.to_owned(),
            method: method.to_owned(),
            payload,
            timeout_nano: i64::try_from(remaining.as_nanos()).unwrap_or(i64::MAX),
            metadata: Vec::new(),
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(stream, tx);
        let message = encode_message(stream, TYPE_REQUEST, &request.encode_to_vec());
        if let Err(error) = self.trunk.send(self.conn, message) {
            lock(&self.waiters).remove(&stream);
            return Err(CallError::Closed(error.to_string()));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CallError::Closed(
                self.trunk
                    .close_reason()
                    .unwrap_or_else(|| "the connection ended".to_owned()),
            )),
            Err(_) => {
                lock(&self.waiters).remove(&stream);
                Err(CallError::DeadlineExceeded(remaining))
            }
        }
    }

    /// [`Client::call`] with typed messages.
    ///
    /// Errors: as [`Client::call`].
    pub async fn call_typed<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
        deadline: Instant,
    ) -> Result<Resp, CallError> {
        let payload = self
            .call(service, method, request.encode_to_vec(), deadline)
            .await?;
        Resp::decode(payload).map_err(|error| CallError::Protocol(error.to_string()))
    }
}

async fn read_answers(mut reader: MessageReader, waiters: Waiters, trunk: Trunk) {
    while let Some(message) = reader.next().await {
        let (stream, answer) = match message {
            Incoming::Message {
                stream,
                kind: TYPE_RESPONSE,
                payload,
            } => {
                let answer = match Response::decode(payload) {
                    Ok(Response {
                        status: Some(status),
                        ..
                    }) if status.code != code::OK => Err(CallError::Status {
                        code: status.code,
                        message: status.message,
                    }),
                    Ok(response) => Ok(Bytes::from(response.payload)),
                    Err(error) => Err(CallError::Protocol(format!(
                        "undecodable ttrpc response: {error}"
                    ))),
                };
                (stream, answer)
            }
            Incoming::Oversized {
                stream,
                kind: TYPE_RESPONSE,
                length,
            } => (
                stream,
                Err(CallError::Status {
                    code: code::RESOURCE_EXHAUSTED,
                    message: format!(
                        "message length {length} exceed maximum message size of {MAX_MESSAGE_LEN}"
                    ),
                }),
            ),
            // Not an answer: nothing a unary client waits for.
            _ => continue,
        };
        // An answer nobody waits for any more came after its deadline: dropped.
        if let Some(waiter) = lock(&waiters).remove(&stream) {
            let _ = waiter.send(answer);
        }
    }
    // The conn ended: every waiting call fails (their senders drop here).
    lock(&waiters).clear();
    trunk.close("the peer closed the connection");
}

/// What a handler learns about a request besides its payload.
#[derive(Clone, Debug)]
pub struct CallInfo {
    /// Service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// The caller's remaining time, when it sent one.
    pub timeout: Option<Duration>,
}

/// A boxed handler result.
pub type Reply = Pin<Box<dyn Future<Output = Result<Vec<u8>, Status>> + Send>>;
type Handler = Arc<dyn Fn(Bytes, CallInfo) -> Reply + Send + Sync>;

/// A ttrpc server: (service, method) to handler.
#[derive(Default)]
pub struct Server {
    handlers: HashMap<(String, String), Handler>,
}

impl Server {
    /// A server with no methods: every call is `Unimplemented`.
    pub fn new() -> Self {
        Server::default()
    }

    /// Registers a handler of encoded messages.
    pub fn register_raw<F>(&mut self, service: &str, method: &str, handler: F)
    where
        F: Fn(Bytes, CallInfo) -> Reply + Send + Sync + 'static,
    {
        self.handlers
            .insert((service.to_owned(), method.to_owned()), Arc::new(handler));
    }

    /// Registers a typed handler; an undecodable request is answered `InvalidArgument`.
    pub fn register<Req, Resp, F, Fut>(&mut self, service: &str, method: &str, handler: F)
    where
        Req: Message + Default + 'static,
        Resp: Message + 'static,
        F: Fn(Req, CallInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.register_raw(service, method, move |payload, info| {
            let handler = handler.clone();
            Box::pin(async move {
                let request = Req::decode(payload)
                    .map_err(|error| Status::new(code::INVALID_ARGUMENT, error.to_string()))?;
                Ok(handler(request, info).await?.encode_to_vec())
            })
        });
    }

    /// Serves requests arriving on `incoming`, answering on the same conn of `trunk`,
    /// until the conn ends.
    pub async fn serve(self: Arc<Self>, trunk: Trunk, incoming: ConnReceiver) {
        let conn = incoming.id;
        let mut reader = MessageReader::new(incoming);
        while let Some(message) = reader.next().await {
            match message {
                Incoming::Message {
                    stream,
                    kind: TYPE_REQUEST,
                    payload,
                } => {
                    let server = self.clone();
                    let trunk = trunk.clone();
                    tokio::spawn(async move {
                        let answer = server.dispatch(stream, payload).await;
                        let response = match answer {
                            Ok(payload) => Response {
                                status: None,
                                payload,
                            },
                            Err(status) => Response {
                                status: Some(status),
                                payload: Vec::new(),
                            },
                        };
                        let message =
                            encode_message(stream, TYPE_RESPONSE, &response.encode_to_vec());
                        // A send failure means the connection is gone; the reader ends too.
                        let _ = trunk.send(conn, message);
                    });
                }
                Incoming::Oversized {
                    stream,
                    kind: TYPE_REQUEST,
                    length,
                } => {
                    let response = Response {
                        status: Some(Status::new(
                            code::RESOURCE_EXHAUSTED,
                            format!(
                                "message length {length} exceed maximum message size of {MAX_MESSAGE_LEN}"
                            ),
                        )),
                        payload: Vec::new(),
                    };
                    let _ = trunk.send(
                        conn,
                        encode_message(stream, TYPE_RESPONSE, &response.encode_to_vec()),
                    );
                }
                _ => {}
            }
        }
    }

    async fn dispatch(&self, stream: u32, payload: Bytes) -> Result<Vec<u8>, Status> {
        if stream % 2 != 1 {
            return Err(Status::new(
                code::INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams",
            ));
        }
        let request = Request::decode(payload)
            .map_err(|error| Status::new(code::INVALID_ARGUMENT, error.to_string()))?;
        let handler = self
            .handlers
            .get(&(request.service.clone(), request.method.clone()))
            .cloned();
        let Some(handler) = handler else {
            let known = self.handlers.keys().any(|(s, _)| *s == request.service);
            return Err(if known {
                Status::new(code::UNIMPLEMENTED, format!("method {}", request.method))
            } else {
                Status::new(code::UNIMPLEMENTED, format!("service {}", request.service))
            });
        };
        let timeout = u64::try_from(request.timeout_nano)
            .ok()
            .filter(|nanos| *nanos > 0)
            .map(Duration::from_nanos);
        let info = CallInfo {
            service: request.service,
            method: request.method,
            timeout,
        };
        handler(Bytes::from(request.payload), info).await
    }
}
