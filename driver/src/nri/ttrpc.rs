//! ttrpc, the request/response protocol NRI runs on each mux conn, on prost.
//!
//! A frame is a 10-byte header, `u32 BE payload length | u32 BE stream id | u8 type |
//! u8 flags`, then the payload: a [`TtrpcRequest`] (type 1) or a [`TtrpcResponse`] (type 2).
//! A client numbers its calls with odd, increasing stream ids; the server answers on the same
//! stream id. Only unary calls exist here (NRI uses nothing else).
//!
//! Guarantees: no input makes this code panic; a frame announcing more than
//! [`MAX_MESSAGE_LEN`] bytes is skipped without being buffered (a server answers it with
//! `ResourceExhausted`, as Go's ttrpc does); each reply goes out whole, never interleaved.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;

use super::proto::{KeyValue, RpcStatus, TtrpcRequest, TtrpcResponse};

/// Most requests a server runs at once; more are answered `ResourceExhausted`.
pub const MAX_IN_FLIGHT: usize = 64;
/// Length of a ttrpc frame header.
pub const HEADER_LEN: usize = 10;
/// Largest ttrpc payload either side accepts (ttrpc's own limit).
pub const MAX_MESSAGE_LEN: usize = 4 << 20;
/// Frame type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// Frame type of a response.
pub const TYPE_RESPONSE: u8 = 2;

/// The gRPC status codes ttrpc carries in `google.rpc.Status.code`.
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// The handler failed (netclaim's hook errors).
    pub const UNKNOWN: i32 = 2;
    /// The request could not be decoded or was refused.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// The handler did not finish within the request's deadline.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// A message over [`super::MAX_MESSAGE_LEN`].
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// No handler for the service and method.
    pub const UNIMPLEMENTED: i32 = 12;
    /// A server-side encoding problem.
    pub const INTERNAL: i32 = 13;
}

/// A ttrpc status with a non-zero code: what a failed call returns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ttrpc status {code}: {message}")]
pub struct Status {
    /// gRPC status code (see [`code`]).
    pub code: i32,
    /// Human-readable message; for NRI hooks, the driver's error message.
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

    /// `Unknown`: the handler failed with `message`.
    pub fn unknown(message: impl Into<String>) -> Self {
        Status::new(code::UNKNOWN, message)
    }

    /// `InvalidArgument`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Status::new(code::INVALID_ARGUMENT, message)
    }

    /// `DeadlineExceeded`.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Status::new(code::DEADLINE_EXCEEDED, message)
    }

    /// `Unimplemented`.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Status::new(code::UNIMPLEMENTED, message)
    }
}

/// A transport-level failure reading frames.
#[derive(Debug, thiserror::Error)]
pub enum TtrpcError {
    /// The stream failed or ended inside a frame.
    #[error("ttrpc i/o: {0}")]
    Io(#[from] io::Error),
    /// A message to send is over [`MAX_MESSAGE_LEN`].
    #[error("ttrpc message of {0} bytes exceeds the maximum of {MAX_MESSAGE_LEN}")]
    TooLarge(usize),
}

/// Why a client call did not produce a response message.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server answered with a non-zero status.
    #[error(transparent)]
    Status(#[from] Status),
    /// No answer within the call's timeout.
    #[error("no ttrpc response within {0:?}")]
    Timeout(Duration),
    /// The connection is closed (before or while waiting).
    #[error("ttrpc connection closed")]
    Closed,
    /// The request could not be encoded or sent.
    #[error("sending ttrpc request: {0}")]
    Send(#[from] TtrpcError),
    /// The response payload could not be decoded.
    #[error("decoding ttrpc response: {0}")]
    Decode(#[from] prost::DecodeError),
}

impl CallError {
    /// The status code when the server answered with an error status.
    pub fn status_code(&self) -> Option<i32> {
        match self {
            CallError::Status(status) => Some(status.code),
            _ => None,
        }
    }
}

/// A frame's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes.
    pub length: u32,
    /// Stream id (odd for client-initiated calls).
    pub stream_id: u32,
    /// [`TYPE_REQUEST`], [`TYPE_RESPONSE`] or a type this code ignores.
    pub kind: u8,
    /// Frame flags (unused by unary calls).
    pub flags: u8,
}

impl FrameHeader {
    fn parse(raw: &[u8; HEADER_LEN]) -> Self {
        FrameHeader {
            length: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            stream_id: u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]),
            kind: raw[8],
            flags: raw[9],
        }
    }
}

/// One frame read from a stream.
#[derive(Debug)]
pub enum Frame {
    /// A frame and its payload.
    Message {
        /// The frame's header.
        header: FrameHeader,
        /// The payload, `header.length` bytes.
        payload: Bytes,
    },
    /// A frame over [`MAX_MESSAGE_LEN`]: its payload was read and discarded.
    Oversized {
        /// The frame's header.
        header: FrameHeader,
    },
}

/// Reads the next frame; `Ok(None)` on a clean EOF between frames.
///
/// Errors: EOF inside a frame or an i/o error ([`TtrpcError::Io`]).
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, TtrpcError> {
    let mut raw = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut raw[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(
                io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside a ttrpc header").into(),
            );
        }
        filled += n;
    }
    let header = FrameHeader::parse(&raw);
    let length = u64::from(header.length);
    if length > MAX_MESSAGE_LEN as u64 {
        // Skip the payload so the stream stays in step, without buffering it.
        let skipped =
            tokio::io::copy(&mut (&mut *reader).take(length), &mut tokio::io::sink()).await?;
        if skipped < length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof inside an oversized ttrpc frame",
            )
            .into());
        }
        return Ok(Some(Frame::Oversized { header }));
    }
    let mut payload = BytesMut::zeroed(header.length as usize);
    reader.read_exact(&mut payload).await?;
    Ok(Some(Frame::Message {
        header,
        payload: payload.freeze(),
    }))
}

/// Encodes one frame (header and payload) into a single buffer.
///
/// Errors: [`TtrpcError::TooLarge`] for a payload over [`MAX_MESSAGE_LEN`].
pub fn encode_frame(
    stream_id: u32,
    kind: u8,
    flags: u8,
    payload: &[u8],
) -> Result<Bytes, TtrpcError> {
    if payload.len() > MAX_MESSAGE_LEN {
        return Err(TtrpcError::TooLarge(payload.len()));
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    // payload.len() <= 4 MiB, so the cast is exact.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(payload);
    Ok(out.freeze())
}

type BoxedWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A writer shared by concurrent callers; each frame is written whole under the lock.
#[derive(Clone)]
struct FrameWriter(Arc<Mutex<BoxedWriter>>);

impl FrameWriter {
    fn new<W: AsyncWrite + Send + Unpin + 'static>(writer: W) -> Self {
        FrameWriter(Arc::new(Mutex::new(Box::new(writer))))
    }

    async fn write(&self, frame: &[u8]) -> io::Result<()> {
        let mut writer = self.0.lock().await;
        writer.write_all(frame).await?;
        writer.flush().await
    }
}

type PendingCalls = Arc<StdMutex<HashMap<u32, oneshot::Sender<Result<Bytes, CallError>>>>>;

/// A ttrpc client on one byte stream: concurrent calls, each with its own timeout.
pub struct Client {
    writer: FrameWriter,
    next_stream_id: AtomicU32,
    pending: PendingCalls,
    closed: CancellationToken,
}

impl Client {
    /// Starts a client: a task reads responses from `reader` until EOF.
    pub fn new<R, W>(reader: R, writer: W) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let pending: PendingCalls = Arc::default();
        let closed = CancellationToken::new();
        tokio::spawn(read_responses(reader, pending.clone(), closed.clone()));
        Client {
            writer: FrameWriter::new(writer),
            next_stream_id: AtomicU32::new(1),
            pending,
            closed,
        }
    }

    /// Resolves when the response stream ended (EOF or error).
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Calls `service`/`method` with an encoded request, sending `timeout` as the request's
    /// deadline and waiting at most that long.
    ///
    /// Errors: the server's non-zero [`Status`], [`CallError::Timeout`],
    /// [`CallError::Closed`], or a send failure.
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        if self.closed.is_cancelled() {
            return Err(CallError::Closed);
        }
        // Client streams are odd; wrapping keeps them odd.
        let stream_id = self.next_stream_id.fetch_add(2, Ordering::Relaxed);
        let request = TtrpcRequest {
            service: service.to_owned(),
            method: method.to_owned(),
            payload,
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
            metadata: Vec::new(),
        };
        let frame = encode_frame(stream_id, TYPE_REQUEST, 0, &request.encode_to_vec())?;
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(stream_id, tx);
        if let Err(error) = self.writer.write(&frame).await {
            self.lock_pending().remove(&stream_id);
            return Err(CallError::Send(error.into()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Closed),
            Err(_) => {
                self.lock_pending().remove(&stream_id);
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// Calls `service`/`method` with a typed request and decodes the typed response.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let payload = self
            .call_raw(service, method, request.encode_to_vec(), timeout)
            .await?;
        Ok(Resp::decode(payload)?)
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Result<Bytes, CallError>>>> {
        lock_ignoring_poison(&self.pending)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

fn lock_ignoring_poison<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The client's reader task: hands each response to the call waiting on its stream id.
async fn read_responses<R: AsyncRead + Unpin>(
    mut reader: R,
    pending: PendingCalls,
    closed: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader) => frame,
            () = closed.cancelled() => break,
        };
        let (header, result) = match frame {
            Ok(Some(Frame::Message { header, payload })) if header.kind == TYPE_RESPONSE => {
                (header, decode_response(payload))
            }
            Ok(Some(Frame::Oversized { header })) if header.kind == TYPE_RESPONSE => {
                let status = Status::new(
                    code::RESOURCE_EXHAUSTED,
                    format!("response of {} bytes is over the limit", header.length),
                );
                (header, Err(CallError::Status(status)))
            }
            Ok(Some(frame)) => {
                tracing::debug!(
                    ?frame,
                    "ttrpc client: ignoring a frame that is not a response"
                );
                continue;
            }
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(%error, "ttrpc client: response stream failed");
                break;
            }
        };
        let waiter = lock_ignoring_poison(&pending).remove(&header.stream_id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(result);
            }
            None => tracing::debug!(
                stream_id = header.stream_id,
                "ttrpc client: response for no pending call"
            ),
        }
    }
    closed.cancel();
    // Dropping the senders fails every waiting call with `Closed`.
    lock_ignoring_poison(&pending).clear();
}

/// What a handler learns about the request besides its payload.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// Service name, e.g. `nri.pkg.api.v1alpha1.Plugin`.
    pub service: String,
    /// Method name, e.g. `StateChange`.
    pub method: String,
    /// The caller's deadline, if it sent one (`timeout_nano` > 0).
    pub timeout: Option<Duration>,
    /// The caller's metadata.
    pub metadata: Vec<KeyValue>,
}

/// A boxed handler result future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, Status>> + Send>>;

type Handler = Arc<dyn Fn(Bytes, RequestContext) -> HandlerFuture + Send + Sync>;

/// A ttrpc server dispatch table: (service, method) to handler.
#[derive(Default)]
pub struct Server {
    handlers: HashMap<(String, String), Handler>,
}

impl Server {
    /// An empty dispatch table: every call answers `Unimplemented`.
    pub fn new() -> Self {
        Server::default()
    }

    /// Registers a handler working on encoded payloads.
    pub fn register_raw<F>(&mut self, service: &str, method: &str, handler: F)
    where
        F: Fn(Bytes, RequestContext) -> HandlerFuture + Send + Sync + 'static,
    {
        self.handlers
            .insert((service.to_owned(), method.to_owned()), Arc::new(handler));
    }

    /// Registers a typed handler; an undecodable request answers `InvalidArgument`.
    pub fn register<Req, Resp, F, Fut>(&mut self, service: &str, method: &str, handler: F)
    where
        Req: Message + Default + 'static,
        Resp: Message + 'static,
        F: Fn(Req, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.register_raw(service, method, move |payload, context| {
            let decoded = Req::decode(payload);
            let handler = handler.clone();
            Box::pin(async move {
                let request = decoded.map_err(|error| {
                    Status::invalid_argument(format!(
                        "decoding {}/{}: {error}",
                        context.service, context.method
                    ))
                })?;
                Ok(handler(request, context).await?.encode_to_vec())
            })
        });
    }

    /// Serves requests read from `reader` until EOF, answering on `writer`. Each request runs
    /// in its own task, so a slow handler does not hold up the others.
    ///
    /// Errors: the stream failed or ended inside a frame.
    pub async fn serve<R, W>(self: Arc<Self>, mut reader: R, writer: W) -> Result<(), TtrpcError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let writer = FrameWriter::new(writer);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        while let Some(frame) = read_frame(&mut reader).await? {
            match frame {
                Frame::Message { header, payload } if header.kind == TYPE_REQUEST => {
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                        // A runtime sends one event at a time; this many at once is a peer
                        // gone wrong, and each would hold a task and its payload.
                        let status = Status::new(
                            code::RESOURCE_EXHAUSTED,
                            format!("more than {MAX_IN_FLIGHT} requests in flight"),
                        );
                        reply(&writer, header.stream_id, Err(status)).await;
                        continue;
                    };
                    let server = self.clone();
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        let result = server.dispatch(header.stream_id, payload).await;
                        reply(&writer, header.stream_id, result).await;
                        drop(permit);
                    });
                }
                Frame::Oversized { header } if header.kind == TYPE_REQUEST => {
                    let status = Status::new(
                        code::RESOURCE_EXHAUSTED,
                        format!(
                            "message length {} exceeds maximum message size of {MAX_MESSAGE_LEN}",
                            header.length
                        ),
                    );
                    reply(&writer, header.stream_id, Err(status)).await;
                }
                other => {
                    tracing::debug!(frame = ?other, "ttrpc server: ignoring a frame that is not a request")
                }
            }
        }
        Ok(())
    }

    async fn dispatch(&self, stream_id: u32, payload: Bytes) -> Result<Vec<u8>, Status> {
        let (context, payload) = decode_request(stream_id, payload)?;
        let key = (context.service.clone(), context.method.clone());
        let Some(handler) = self.handlers.get(&key).cloned() else {
            return Err(Status::unimplemented(format!(
                "service {}: method {} not implemented",
                key.0, key.1
            )));
        };
        handler(payload, context).await
    }
}

/// Decodes the payload of a request frame on `stream_id` into what a handler gets: its
/// context (service, method, deadline, metadata) and its encoded request message.
///
/// Errors: `InvalidArgument` for an even stream id (client calls are odd) or a payload
/// that is not a ttrpc `Request`.
pub fn decode_request(stream_id: u32, payload: Bytes) -> Result<(RequestContext, Bytes), Status> {
    if stream_id.is_multiple_of(2) {
        return Err(Status::invalid_argument(format!(
            "stream id {stream_id} of a client call must be odd"
        )));
    }
    let request = TtrpcRequest::decode(payload)
        .map_err(|error| Status::invalid_argument(format!("decoding ttrpc request: {error}")))?;
    let timeout = u64::try_from(request.timeout_nano)
        .ok()
        .filter(|nanos| *nanos > 0)
        .map(Duration::from_nanos);
    let context = RequestContext {
        service: request.service,
        method: request.method,
        timeout,
        metadata: request.metadata,
    };
    Ok((context, Bytes::from(request.payload)))
}

/// Decodes the payload of a response frame into the call's outcome: the response message
/// (still encoded) or the server's non-zero status.
///
/// Errors: [`CallError::Status`] for a non-zero status, [`CallError::Decode`] for a
/// payload that is not a ttrpc `Response`.
pub fn decode_response(payload: Bytes) -> Result<Bytes, CallError> {
    let response = TtrpcResponse::decode(payload)?;
    match response.status {
        Some(status) if status.code != code::OK => {
            Err(Status::new(status.code, status.message).into())
        }
        _ => Ok(Bytes::from(response.payload)),
    }
}

/// Sends the response for `stream_id`; a failed write means the peer is gone, which the
/// read side notices.
async fn reply(writer: &FrameWriter, stream_id: u32, result: Result<Vec<u8>, Status>) {
    let response = match result {
        Ok(payload) if payload.len() > MAX_MESSAGE_LEN => response_for(Err(Status::new(
            code::RESOURCE_EXHAUSTED,
            format!(
                "response of {} bytes exceeds maximum message size of {MAX_MESSAGE_LEN}",
                payload.len()
            ),
        ))),
        result => response_for(result),
    };
    let frame = match encode_frame(stream_id, TYPE_RESPONSE, 0, &response.encode_to_vec()) {
        Ok(frame) => frame,
        Err(error) => {
            tracing::warn!(%error, stream_id, "ttrpc server: cannot encode response");
            return;
        }
    };
    if let Err(error) = writer.write(&frame).await {
        tracing::debug!(%error, stream_id, "ttrpc server: cannot send response");
    }
}

fn response_for(result: Result<Vec<u8>, Status>) -> TtrpcResponse {
    match result {
        Ok(payload) => TtrpcResponse {
            status: Some(RpcStatus {
                code: code::OK,
                message: String::new(),
            }),
            payload,
        },
        Err(status) => TtrpcResponse {
            status: Some(RpcStatus {
                code: status.code,
                message: status.message,
            }),
            payload: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nri::proto::Empty;
    use tokio::io::{DuplexStream, duplex};
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(5);

    /// A one-way pipe: bytes written to the second end come out of the first; dropping the
    /// second end gives the first EOF.
    fn pipe() -> (DuplexStream, DuplexStream) {
        duplex(1 << 16)
    }

    /// A server with an echo method and a method that fails, connected to a client.
    fn echo_pair() -> Client {
        let (to_server_r, to_server_w) = pipe();
        let (to_client_r, to_client_w) = pipe();
        let mut server = Server::new();
        server.register_raw("svc", "Echo", |payload, _| {
            Box::pin(async move { Ok(payload.to_vec()) })
        });
        server.register::<Empty, Empty, _, _>("svc", "Fail", |_, _| async {
            Err(Status::unknown("no such device eth9"))
        });
        server.register_raw("svc", "Deadline", |_, context| {
            Box::pin(async move { Ok(format!("{:?}", context.timeout).into_bytes()) })
        });
        tokio::spawn(Arc::new(server).serve(to_server_r, to_client_w));
        Client::new(to_client_r, to_server_w)
    }

    #[tokio::test]
    async fn calls_reach_handlers_and_errors_keep_their_message() {
        let client = echo_pair();
        let echoed = client
            .call_raw("svc", "Echo", b"ping".to_vec(), WAIT)
            .await
            .unwrap();
        assert_eq!(&echoed[..], b"ping");
        let err = client
            .call::<Empty, Empty>("svc", "Fail", &Empty {}, WAIT)
            .await
            .unwrap_err();
        assert_eq!(err.status_code(), Some(code::UNKNOWN));
        assert!(err.to_string().contains("no such device eth9"), "{err}");
        let err = client
            .call_raw("svc", "Nope", Vec::new(), WAIT)
            .await
            .unwrap_err();
        assert_eq!(err.status_code(), Some(code::UNIMPLEMENTED));
        let deadline = client
            .call_raw("svc", "Deadline", Vec::new(), Duration::from_millis(1500))
            .await
            .unwrap();
        assert_eq!(&deadline[..], b"Some(1.5s)");
    }

    #[tokio::test]
    async fn large_payloads_round_trip() {
        let client = echo_pair();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let echoed = client
            .call_raw("svc", "Echo", big.clone(), WAIT)
            .await
            .unwrap();
        assert_eq!(&echoed[..], &big[..]);
    }

    #[tokio::test]
    async fn client_stream_ids_are_odd_and_increasing() {
        let (to_server_r, to_server_w) = pipe();
        let (to_client_r, _to_client_w) = pipe();
        let client = Arc::new(Client::new(to_client_r, to_server_w));
        for _ in 0..3 {
            let client = client.clone();
            // Nobody answers; the calls time out.
            tokio::spawn(async move {
                client
                    .call_raw("s", "m", Vec::new(), Duration::from_millis(50))
                    .await
            });
        }
        let mut reader = to_server_r;
        let mut ids = Vec::new();
        for _ in 0..3 {
            match timeout(WAIT, read_frame(&mut reader))
                .await
                .unwrap()
                .unwrap()
            {
                Some(Frame::Message { header, .. }) => {
                    assert_eq!(header.kind, TYPE_REQUEST);
                    ids.push(header.stream_id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 3, 5]);
    }

    #[tokio::test]
    async fn a_call_without_an_answer_times_out() {
        let (_to_server_r, to_server_w) = pipe();
        let (to_client_r, _to_client_w) = pipe();
        let client = Client::new(to_client_r, to_server_w);
        let err = client
            .call_raw("s", "m", Vec::new(), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn closing_the_stream_fails_waiting_calls() {
        let (_to_server_r, to_server_w) = pipe();
        let (to_client_r, to_client_w) = pipe();
        let client = Arc::new(Client::new(to_client_r, to_server_w));
        let waiting = {
            let client = client.clone();
            tokio::spawn(async move { client.call_raw("s", "m", Vec::new(), WAIT).await })
        };
        drop(to_client_w);
        let err = timeout(WAIT, waiting).await.unwrap().unwrap().unwrap_err();
        assert!(matches!(err, CallError::Closed), "{err}");
    }

    #[tokio::test]
    async fn oversized_request_is_answered_resource_exhausted() {
        let (to_client_r, to_client_w) = pipe();
        let server = Arc::new(Server::new());
        // The test feeds the server through `feed` and reads its answers from `answers`.
        let (server_in, mut feed) = duplex(1 << 16);
        tokio::spawn(server.serve(server_in, to_client_w));
        let length = (MAX_MESSAGE_LEN + 1) as u32;
        let mut header = length.to_be_bytes().to_vec();
        header.extend_from_slice(&7u32.to_be_bytes());
        header.extend_from_slice(&[TYPE_REQUEST, 0]);
        let feeder = tokio::spawn(async move {
            feed.write_all(&header).await.unwrap();
            let chunk = vec![0u8; 1 << 16];
            let mut left = length as usize;
            while left > 0 {
                let n = left.min(chunk.len());
                feed.write_all(&chunk[..n]).await.unwrap();
                left -= n;
            }
            feed
        });
        let mut answers = to_client_r;
        let frame = timeout(WAIT, read_frame(&mut answers))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Frame::Message { header, payload } = frame else {
            panic!("oversized answer")
        };
        assert_eq!(header.stream_id, 7);
        assert_eq!(header.kind, TYPE_RESPONSE);
        let response = TtrpcResponse::decode(payload).unwrap();
        assert_eq!(response.status.unwrap().code, code::RESOURCE_EXHAUSTED);
        let _feed = feeder.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_requests_get_errors_not_panics() {
        let (server_in, mut feed) = duplex(1 << 16);
        let (mut answers, to_client_w) = pipe();
        tokio::spawn(Arc::new(Server::new()).serve(server_in, to_client_w));
        // A request whose payload is not a TtrpcRequest, then one on an even stream id.
        feed.write_all(&encode_frame(1, TYPE_REQUEST, 0, &[0xff, 0xff, 0xff]).unwrap())
            .await
            .unwrap();
        let request = TtrpcRequest {
            service: "s".into(),
            method: "m".into(),
            ..Default::default()
        };
        feed.write_all(&encode_frame(2, TYPE_REQUEST, 0, &request.encode_to_vec()).unwrap())
            .await
            .unwrap();
        let mut codes = Vec::new();
        for _ in 0..2 {
            let frame = timeout(WAIT, read_frame(&mut answers))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Frame::Message { payload, .. } = frame else {
                panic!("oversized answer")
            };
            codes.push(TtrpcResponse::decode(payload).unwrap().status.unwrap().code);
        }
        assert_eq!(codes, vec![code::INVALID_ARGUMENT, code::INVALID_ARGUMENT]);
        // Then a header cut short by EOF: the server stops with an error.
        feed.write_all(&[0, 0, 0, 5, 0]).await.unwrap();
        drop(feed);
        let mut rest = Vec::new();
        timeout(WAIT, answers.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn read_frame_handles_fragmented_and_truncated_input() {
        let frame = encode_frame(9, TYPE_RESPONSE, 0, b"abcdef").unwrap();
        let (mut reader, mut writer) = duplex(1 << 10);
        let whole = frame.clone();
        tokio::spawn(async move {
            for byte in whole.iter() {
                writer.write_all(&[*byte]).await.unwrap();
            }
            writer.write_all(&frame[..HEADER_LEN + 2]).await.unwrap();
        });
        match read_frame(&mut reader).await.unwrap() {
            Some(Frame::Message { header, payload }) => {
                assert_eq!(
                    header,
                    FrameHeader {
                        length: 6,
                        stream_id: 9,
                        kind: TYPE_RESPONSE,
                        flags: 0
                    }
                );
                assert_eq!(&payload[..], b"abcdef");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(read_frame(&mut reader).await.is_err());
        assert!(matches!(
            encode_frame(1, TYPE_REQUEST, 0, &vec![0; MAX_MESSAGE_LEN + 1]),
            Err(TtrpcError::TooLarge(_))
        ));
    }
}
