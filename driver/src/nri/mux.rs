//! The NRI socket multiplexer: several logical byte streams ("conns") over one unix stream.
//!
//! Wire format, as containerd's `pkg/net/multiplex` speaks it: every frame is
//! `u32 BE conn id | u32 BE payload length | payload`. Conn 0 is reserved; NRI uses conn 1
//! ([`PLUGIN_SERVICE_CONN`], the runtime calls the plugin) and conn 2
//! ([`RUNTIME_SERVICE_CONN`], the plugin calls the runtime). Each conn is a byte stream: a
//! ttrpc message may span several mux frames and one mux frame may carry several messages.
//!
//! The same code serves both ends of the socket (the plugin and the runtime stand-in).
//!
//! Guarantees:
//! - Frames written by this side carry at most [`MAX_WRITE_PAYLOAD`] bytes: the Go reader
//!   copies each frame into the caller's buffer, and ttrpc reads through a 4 KiB buffer, so a
//!   bigger frame fails the runtime's read with `ENOMEM`.
//! - One [`MuxWriter::poll_write`] call's bytes go out contiguously (no interleaving with other
//!   writers of the same conn).
//! - A frame announcing more than [`MAX_READ_PAYLOAD`] bytes closes the mux instead of
//!   allocating; frames for conns nobody opened are dropped (as the Go side does).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Conn on which the runtime calls the plugin (`nri.pkg.api.v1alpha1.Plugin`).
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// Conn on which the plugin calls the runtime (`nri.pkg.api.v1alpha1.Runtime`).
pub const RUNTIME_SERVICE_CONN: u32 = 2;
/// Conn id 0 is reserved by the protocol.
pub const RESERVED_CONN: u32 = 0;
/// Length of a mux frame header: conn id and payload length.
pub const HEADER_LEN: usize = 8;
/// Largest payload this side writes in one mux frame.
pub const MAX_WRITE_PAYLOAD: usize = 4096;
/// Largest payload accepted in one incoming mux frame: one whole ttrpc message (header and
/// ttrpc's 4 MiB maximum), the most a Go peer ever puts in a frame.
pub const MAX_READ_PAYLOAD: usize = 10 + (4 << 20);

/// Why a multiplexer could not be set up or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// Conn id 0 is reserved by the protocol.
    #[error("mux conn id {RESERVED_CONN} is reserved")]
    ReservedConn,
    /// The conn id was opened twice on the same mux.
    #[error("mux conn id {0} is already open")]
    AlreadyOpen(u32),
    /// An incoming frame announced a payload larger than [`MAX_READ_PAYLOAD`].
    #[error("mux frame for conn {conn} announces {length} bytes, more than {MAX_READ_PAYLOAD}")]
    OversizedFrame {
        /// Conn id of the frame.
        conn: u32,
        /// Announced payload length.
        length: u32,
    },
    /// Reading or writing the underlying stream failed.
    #[error("mux trunk i/o: {0}")]
    Io(#[from] io::Error),
}

type Outgoing = (u32, Bytes);

/// A multiplexer that is being set up: open the conns, then [`Mux::start`] it.
///
/// Conns are opened before the reader starts so that no early frame is dropped for want of a
/// route (the runtime may call Configure the moment the plugin connects).
pub struct Mux<IO> {
    io: IO,
    routes: HashMap<u32, mpsc::UnboundedSender<Bytes>>,
    write_tx: mpsc::UnboundedSender<Outgoing>,
    write_rx: mpsc::UnboundedReceiver<Outgoing>,
}

impl<IO> Mux<IO>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    /// Wraps a connected stream (a `UnixStream`, or a `tokio::io::duplex` end in tests).
    pub fn new(io: IO) -> Self {
        let (write_tx, write_rx) = mpsc::unbounded_channel();
        Mux {
            io,
            routes: HashMap::new(),
            write_tx,
            write_rx,
        }
    }

    /// Opens logical conn `id`.
    ///
    /// Errors: [`MuxError::ReservedConn`] for id 0, [`MuxError::AlreadyOpen`] for a repeat.
    pub fn open(&mut self, id: u32) -> Result<MuxConn, MuxError> {
        if id == RESERVED_CONN {
            return Err(MuxError::ReservedConn);
        }
        if self.routes.contains_key(&id) {
            return Err(MuxError::AlreadyOpen(id));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.insert(id, tx);
        Ok(MuxConn {
            reader: MuxReader {
                rx,
                pending: Bytes::new(),
            },
            writer: MuxWriter {
                id,
                tx: self.write_tx.clone(),
            },
        })
    }

    /// Starts the reader and writer tasks. The returned handle closes the mux and tells when
    /// the peer went away.
    pub fn start(self) -> MuxHandle {
        let closed = CancellationToken::new();
        let (read_half, write_half) = tokio::io::split(self.io);
        let reader_closed = closed.clone();
        let routes = self.routes;
        tokio::spawn(async move {
            let result = tokio::select! {
                result = read_frames(read_half, routes) => result,
                () = reader_closed.cancelled() => Ok(()),
            };
            match result {
                Ok(()) => tracing::debug!("nri mux: trunk closed"),
                Err(error) => tracing::debug!(%error, "nri mux: reader stopped"),
            }
            reader_closed.cancel();
        });
        let writer_closed = closed.clone();
        // Dropping the mux's own sender lets the writer see the end once every MuxWriter is
        // gone too.
        drop(self.write_tx);
        let mut write_half = write_half;
        let write_rx = self.write_rx;
        tokio::spawn(async move {
            let result = tokio::select! {
                result = write_frames(&mut write_half, write_rx) => result,
                () = writer_closed.cancelled() => return,
            };
            match result {
                // Every writer is gone but the peer may still talk: hold the write half
                // until the mux closes.
                Ok(()) => writer_closed.cancelled().await,
                Err(error) => {
                    tracing::debug!(%error, "nri mux: writer stopped");
                    writer_closed.cancel();
                }
            }
        });
        MuxHandle { closed }
    }
}

/// Controls a running multiplexer.
#[derive(Clone, Debug)]
pub struct MuxHandle {
    closed: CancellationToken,
}

impl MuxHandle {
    /// Closes the mux: both tasks stop and the stream is dropped, so the peer sees EOF and
    /// every [`MuxReader`] reads EOF.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves once the mux is closed, by [`MuxHandle::close`], EOF or an i/o error.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Whether the mux is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

/// Reads frames from the trunk and routes their payloads to the conns' readers, until a
/// clean EOF between frames (`Ok`) or an error.
///
/// This is the mux's whole receive path ([`Mux::start`] runs it); it is public so the fuzz
/// target (`test/fuzz`) can drive it over an in-memory reader.
///
/// Errors: EOF inside a frame or an i/o error ([`MuxError::Io`]), or a frame over
/// [`MAX_READ_PAYLOAD`] ([`MuxError::OversizedFrame`]).
pub async fn read_frames<R: AsyncRead + Unpin>(
    mut trunk: R,
    mut routes: HashMap<u32, mpsc::UnboundedSender<Bytes>>,
) -> Result<(), MuxError> {
    let mut header = [0u8; HEADER_LEN];
    loop {
        if !read_header(&mut trunk, &mut header).await? {
            return Ok(());
        }
        let (conn, length) = decode_header(&header)?;
        let mut payload = BytesMut::zeroed(length);
        trunk.read_exact(&mut payload).await?;
        match routes.get(&conn) {
            Some(route) => {
                if route.send(payload.freeze()).is_err() {
                    // The conn's reader is gone; later frames for it are dropped too.
                    routes.remove(&conn);
                }
            }
            None => tracing::debug!(conn, length, "nri mux: dropping frame for unopened conn"),
        }
    }
}

/// Reads one frame header; `false` on a clean EOF before its first byte.
async fn read_header<R: AsyncRead + Unpin>(
    trunk: &mut R,
    header: &mut [u8; HEADER_LEN],
) -> Result<bool, MuxError> {
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = trunk.read(&mut header[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(false);
            }
            return Err(
                io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside a mux header").into(),
            );
        }
        filled += n;
    }
    Ok(true)
}

fn parse_header(header: &[u8; HEADER_LEN]) -> (u32, u32) {
    let conn = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    (conn, length)
}

/// Decodes a frame header into its conn id and payload length.
///
/// Errors: [`MuxError::OversizedFrame`] when the length is over [`MAX_READ_PAYLOAD`].
pub fn decode_header(header: &[u8; HEADER_LEN]) -> Result<(u32, usize), MuxError> {
    let (conn, length) = parse_header(header);
    match usize::try_from(length) {
        Ok(payload) if payload <= MAX_READ_PAYLOAD => Ok((conn, payload)),
        _ => Err(MuxError::OversizedFrame { conn, length }),
    }
}

/// Writes queued messages as frames of at most [`MAX_WRITE_PAYLOAD`] bytes.
async fn write_frames<W: AsyncWrite + Unpin>(
    trunk: &mut W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) -> Result<(), MuxError> {
    let mut frame = Vec::with_capacity(HEADER_LEN + MAX_WRITE_PAYLOAD);
    while let Some((conn, message)) = queue.recv().await {
        for chunk in message.chunks(MAX_WRITE_PAYLOAD) {
            frame.clear();
            frame.extend_from_slice(&conn.to_be_bytes());
            // chunk.len() <= 4096, so the cast is exact.
            frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            frame.extend_from_slice(chunk);
            trunk.write_all(&frame).await?;
        }
        trunk.flush().await?;
    }
    Ok(())
}

/// One logical conn of a mux: a byte stream in each direction.
pub struct MuxConn {
    /// Bytes the peer sent on this conn.
    pub reader: MuxReader,
    /// Bytes to send to the peer on this conn.
    pub writer: MuxWriter,
}

/// The receiving half of a conn; reads EOF when the mux closes.
pub struct MuxReader {
    rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Bytes,
}

impl AsyncRead for MuxReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(bytes)) => self.pending = bytes,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let head = self.pending.split_to(n);
        buf.put_slice(&head);
        Poll::Ready(Ok(()))
    }
}

/// The sending half of a conn. Cheap to clone; writes are queued to the mux's writer task,
/// so they never block, and fail with `BrokenPipe` once the mux is closed.
#[derive(Clone)]
pub struct MuxWriter {
    id: u32,
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl MuxWriter {
    /// Queues `message` to go out on this conn as one contiguous run of frames.
    pub fn send(&self, message: Bytes) -> io::Result<()> {
        if message.is_empty() {
            return Ok(());
        }
        self.tx
            .send((self.id, message))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "nri mux is closed"))
    }

    /// The conn id this writer sends on.
    pub fn conn_id(&self) -> u32 {
        self.id
    }
}

impl AsyncWrite for MuxWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.send(Bytes::copy_from_slice(buf)).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::duplex;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(5);

    fn frame(conn: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = conn.to_be_bytes().to_vec();
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    async fn read_raw_frame<R: AsyncRead + Unpin>(r: &mut R) -> (u32, Vec<u8>) {
        let mut header = [0u8; HEADER_LEN];
        r.read_exact(&mut header).await.unwrap();
        let (conn, len) = parse_header(&header);
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).await.unwrap();
        (conn, payload)
    }

    #[tokio::test]
    async fn reserved_and_duplicate_conns_are_refused() {
        let (a, _b) = duplex(64);
        let mut mux = Mux::new(a);
        assert!(matches!(mux.open(0), Err(MuxError::ReservedConn)));
        mux.open(1).unwrap();
        assert!(matches!(mux.open(1), Err(MuxError::AlreadyOpen(1))));
    }

    #[tokio::test]
    async fn large_writes_split_into_4096_byte_frames() {
        let (a, mut raw) = duplex(1 << 16);
        let mut mux = Mux::new(a);
        let conn = mux.open(2).unwrap();
        let _handle = mux.start();
        let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        conn.writer.send(Bytes::from(message.clone())).unwrap();
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while got.len() < message.len() {
            let (id, payload) = timeout(WAIT, read_raw_frame(&mut raw)).await.unwrap();
            assert_eq!(id, 2);
            sizes.push(payload.len());
            got.extend_from_slice(&payload);
        }
        assert_eq!(sizes, vec![4096, 4096, 10_000 - 8192]);
        assert_eq!(got, message);
    }

    #[tokio::test]
    async fn conns_are_byte_streams_and_routed_by_id() {
        let (a, mut raw) = duplex(1 << 16);
        let mut mux = Mux::new(a);
        let mut one = mux.open(1).unwrap();
        let mut two = mux.open(2).unwrap();
        let handle = mux.start();
        let mut wire = frame(1, b"hel");
        wire.extend(frame(7, b"nobody listens"));
        wire.extend(frame(2, b"xy"));
        wire.extend(frame(1, b"lo"));
        wire.extend(frame(1, b""));
        // Deliver the bytes in odd-sized pieces: frame boundaries must not matter.
        for piece in wire.chunks(3) {
            raw.write_all(piece).await.unwrap();
        }
        let mut hello = [0u8; 5];
        timeout(WAIT, one.reader.read_exact(&mut hello))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&hello, b"hello");
        let mut xy = [0u8; 2];
        timeout(WAIT, two.reader.read_exact(&mut xy))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&xy, b"xy");
        drop(raw);
        timeout(WAIT, handle.closed()).await.unwrap();
        let mut rest = Vec::new();
        timeout(WAIT, one.reader.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn oversized_frame_closes_without_allocating() {
        let (a, mut raw) = duplex(1 << 10);
        let mut mux = Mux::new(a);
        let mut one = mux.open(1).unwrap();
        let handle = mux.start();
        let mut header = 1u32.to_be_bytes().to_vec();
        header.extend_from_slice(&u32::MAX.to_be_bytes());
        raw.write_all(&header).await.unwrap();
        timeout(WAIT, handle.closed()).await.unwrap();
        let mut rest = Vec::new();
        one.reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn truncated_and_garbage_input_does_not_panic() {
        let garbage: Vec<Vec<u8>> = vec![
            vec![0, 0, 0],
            vec![0, 0, 0, 1, 0, 0, 0, 9, 1, 2],
            vec![0xff; 37],
            (0..200u32).map(|i| (i * 7919 % 256) as u8).collect(),
        ];
        for bytes in garbage {
            let (a, mut raw) = duplex(1 << 10);
            let mut mux = Mux::new(a);
            let _one = mux.open(1).unwrap();
            let handle = mux.start();
            raw.write_all(&bytes).await.unwrap();
            drop(raw);
            timeout(WAIT, handle.closed()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn close_gives_the_peer_eof_and_fails_later_writes() {
        let (a, mut raw) = duplex(1 << 10);
        let mut mux = Mux::new(a);
        let conn = mux.open(1).unwrap();
        let handle = mux.start();
        handle.close();
        let mut rest = Vec::new();
        timeout(WAIT, raw.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
        // The writer task is gone once the peer saw EOF.
        let err = conn.writer.send(Bytes::from_static(b"late")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
