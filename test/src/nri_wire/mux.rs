//! The NRI socket multiplexer, written for the test harness from containerd/nri's
//! `pkg/net/multiplex/mux.go` (v0.6.1 and v0.8.0 agree on everything here).
//!
//! Wire format: frames of `u32 BE conn id | u32 BE payload length | payload`. Conn 1 carries
//! the runtime's calls to the plugin, conn 2 the plugin's calls to the runtime; conn 0 is
//! reserved and no peer opens it. Each conn is a byte stream: where one ttrpc message ends
//! and the next begins has nothing to do with frame boundaries.
//!
//! What the Go side does, and this module can do on demand:
//! - **Writing** ([`Framing::GoBufio`]): ttrpc writes each message through a 4096-byte
//!   `bufio.Writer` over the mux conn, and the mux turns every write it gets into one frame.
//!   A message of at most 4096 bytes (10-byte header included) is one frame; a longer one
//!   is a 4096-byte frame followed by one frame with the rest, however long.
//! - **Reading** ([`TrunkOptions::max_incoming_frame`]): the Go reader copies a frame into
//!   the caller's buffer and fails with `ENOMEM` when it does not fit; ttrpc reads through a
//!   4096-byte `bufio.Reader`, so a frame over 4096 bytes fails the connection. (Go can take
//!   a bigger frame in one corner: a payload read of at least 4096 bytes while its buffer
//!   is empty. A plugin cannot rely on that, so the stand-in refuses every such frame.)
//! - Frames for a conn nobody opened are dropped.
//!
//! Not modelled: the Go reader's per-conn queue of 256 frames (overflowing it closes the
//! trunk), and blocking the reader until the runtime is ready (`WithBlockedRead`).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Conn on which the runtime calls the plugin's `Plugin` service.
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// Conn on which the plugin calls the runtime's `Runtime` service.
pub const RUNTIME_SERVICE_CONN: u32 = 2;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// The Go reader's buffer, which every frame a Go peer reads must fit.
pub const GO_READ_BUFFER: usize = 4096;
/// The Go writer's `bufio.Writer` size.
pub const GO_WRITE_BUFFER: usize = 4096;

/// How one outgoing message (a whole ttrpc frame) is cut into mux frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// As containerd's Go code writes: one frame up to 4096 bytes, else 4096 bytes and the
    /// rest in a second frame.
    GoBufio,
    /// Frames of at most this many bytes (4096 is what a Go peer can read; smaller sizes
    /// make every message span frames).
    Chunks(usize),
}

impl Framing {
    /// The frame payload sizes one message of `len` bytes goes out as.
    pub fn frame_sizes(self, len: usize) -> Vec<usize> {
        match self {
            Framing::GoBufio if len <= GO_WRITE_BUFFER => vec![len],
            Framing::GoBufio => vec![GO_WRITE_BUFFER, len - GO_WRITE_BUFFER],
            Framing::Chunks(size) => {
                let size = size.max(1);
                let mut sizes = vec![size; len / size];
                if !len.is_multiple_of(size) {
                    sizes.push(len % size);
                }
                sizes
            }
        }
    }
}

/// How a trunk writes and what it accepts.
#[derive(Clone, Copy, Debug)]
pub struct TrunkOptions {
    /// How outgoing messages are framed.
    pub framing: Framing,
    /// The largest incoming frame payload; a bigger one closes the trunk.
    pub max_incoming_frame: usize,
}

impl TrunkOptions {
    /// The runtime's side as containerd's Go code behaves.
    pub fn go_runtime() -> Self {
        TrunkOptions {
            framing: Framing::GoBufio,
            max_incoming_frame: GO_READ_BUFFER,
        }
    }

    /// A plugin that writes what a Go runtime can read, and reads whatever comes.
    pub fn plugin() -> Self {
        TrunkOptions {
            framing: Framing::Chunks(GO_READ_BUFFER),
            max_incoming_frame: usize::MAX,
        }
    }
}

/// One message to write: its frames go out back to back.
struct Outgoing {
    conn: u32,
    message: Bytes,
}

/// The shared state of one multiplexed connection.
struct TrunkState {
    outgoing: mpsc::UnboundedSender<Outgoing>,
    closed: CancellationToken,
    reason: Mutex<Option<String>>,
}

/// A multiplexed connection. Cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Trunk {
    state: Arc<TrunkState>,
}

/// One logical conn's incoming bytes, in the chunks the frames carried.
pub struct ConnReceiver {
    /// The conn id.
    pub id: u32,
    frames: mpsc::UnboundedReceiver<Bytes>,
}

impl ConnReceiver {
    /// The next frame payload; `None` once the trunk is closed.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.frames.recv().await
    }
}

impl Trunk {
    /// Starts a trunk over `io` with `conns` open (each id once; 0 is refused as reserved).
    /// The returned receivers are in the order of `conns`.
    ///
    /// Errors: a reserved or repeated conn id.
    pub fn start<IO>(
        io: IO,
        conns: &[u32],
        options: TrunkOptions,
    ) -> io::Result<(Trunk, Vec<ConnReceiver>)>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let mut routes = HashMap::new();
        let mut receivers = Vec::new();
        for &id in conns {
            if id == 0 || routes.contains_key(&id) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("mux conn id {id} is reserved or opened twice"),
                ));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            routes.insert(id, tx);
            receivers.push(ConnReceiver { id, frames: rx });
        }
        let (outgoing, queue) = mpsc::unbounded_channel();
        let state = Arc::new(TrunkState {
            outgoing,
            closed: CancellationToken::new(),
            reason: Mutex::new(None),
        });
        let trunk = Trunk { state };
        let (read_half, write_half) = tokio::io::split(io);
        tokio::spawn(read_loop(
            trunk.clone(),
            read_half,
            routes,
            options.max_incoming_frame,
        ));
        tokio::spawn(write_loop(
            trunk.clone(),
            write_half,
            queue,
            options.framing,
        ));
        Ok((trunk, receivers))
    }

    /// Queues `message` for `conn`; its frames go out contiguously.
    ///
    /// Errors: the trunk is closed.
    pub fn send(&self, conn: u32, message: Bytes) -> io::Result<()> {
        if self.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                self.close_reason()
                    .unwrap_or_else(|| "mux trunk closed".to_owned()),
            ));
        }
        self.state
            .outgoing
            .send(Outgoing { conn, message })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "mux trunk closed"))
    }

    /// Closes the trunk (the peer sees EOF) and records why, unless it is closed already.
    pub fn close(&self, reason: impl Into<String>) {
        {
            let mut recorded = self
                .state
                .reason
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if recorded.is_none() {
                *recorded = Some(reason.into());
            }
        }
        self.state.closed.cancel();
    }

    /// Resolves once the trunk is closed, by either side or by a broken frame.
    pub async fn closed(&self) {
        self.state.closed.cancelled().await;
    }

    /// Whether the trunk is closed.
    pub fn is_closed(&self) -> bool {
        self.state.closed.is_cancelled()
    }

    /// Whether `other` is a handle to the same trunk.
    pub fn is_same(&self, other: &Trunk) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// Why the trunk closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.state
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    trunk: Trunk,
    mut reader: R,
    routes: HashMap<u32, mpsc::UnboundedSender<Bytes>>,
    max_frame: usize,
) {
    let reason = tokio::select! {
        reason = read_frames(&mut reader, &routes, max_frame) => reason,
        () = trunk.closed() => return,
    };
    trunk.close(reason);
    // Dropping `routes` ends every receiver.
}

/// Reads frames until something ends the trunk; returns why.
async fn read_frames<R: AsyncRead + Unpin>(
    reader: &mut R,
    routes: &HashMap<u32, mpsc::UnboundedSender<Bytes>>,
    max_frame: usize,
) -> String {
    loop {
        let mut header = [0u8; FRAME_HEADER_LEN];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return "the peer closed the connection".to_owned();
            }
            Err(error) => return format!("reading a mux frame header: {error}"),
        }
        let conn = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if length > max_frame {
            return format!(
                "a mux frame of {length} bytes on conn {conn} does not fit the {max_frame}-byte \
                 read buffer (the Go reader fails with ENOMEM)"
            );
        }
        let mut payload = vec![0u8; length];
        if let Err(error) = reader.read_exact(&mut payload).await {
            return format!("reading a {length}-byte mux frame on conn {conn}: {error}");
        }
        if let Some(route) = routes.get(&conn) {
            // A receiver that went away just loses its bytes, as a closed Go conn does.
            let _ = route.send(Bytes::from(payload));
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    trunk: Trunk,
    mut writer: W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    framing: Framing,
) {
    loop {
        let next = tokio::select! {
            next = queue.recv() => next,
            () = trunk.closed() => break,
        };
        let Some(Outgoing { conn, message }) = next else {
            break;
        };
        let mut offset = 0;
        let mut buffer = Vec::new();
        for size in framing.frame_sizes(message.len()) {
            buffer.extend_from_slice(&conn.to_be_bytes());
            // A message is at most ttrpc's 4 MiB plus header, far below u32::MAX.
            buffer.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes());
            buffer.extend_from_slice(&message[offset..offset + size]);
            offset += size;
        }
        let written = async {
            writer.write_all(&buffer).await?;
            writer.flush().await
        };
        if let Err(error) = written.await {
            trunk.close(format!("writing to the trunk: {error}"));
            break;
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bufio_framing_matches_the_go_writer() {
        assert_eq!(Framing::GoBufio.frame_sizes(10), vec![10]);
        assert_eq!(Framing::GoBufio.frame_sizes(4096), vec![4096]);
        assert_eq!(Framing::GoBufio.frame_sizes(4097), vec![4096, 1]);
        assert_eq!(Framing::GoBufio.frame_sizes(100_000), vec![4096, 95_904]);
    }

    #[test]
    fn chunked_framing_covers_the_message() {
        assert_eq!(Framing::Chunks(4).frame_sizes(10), vec![4, 4, 2]);
        assert_eq!(Framing::Chunks(5).frame_sizes(10), vec![5, 5]);
        assert!(Framing::Chunks(7).frame_sizes(0).is_empty());
    }
}
