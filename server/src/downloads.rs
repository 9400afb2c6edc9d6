//! Blob downloads from local disk, written to the socket straight from the object
//! files: a worker reads a file into its buffer and writes that buffer to the socket,
//! with no stop in between.
//!
//! Not `sendfile`, which this module used before: on loopback (a client on the same
//! host, a reverse proxy in front of berthd) the receiver of `sendfile`d pages copies
//! them out of the page cache itself, in page-sized fragments, and is slower for it
//! than when the sender copies; measured on the 2-core machine with curl, one client
//! took 1.8–2.0 GB/s by `sendfile` and 2.6–4.0 GB/s by read and write, eight clients
//! 3.4–3.8 and 3.9–4.3 (README, "Performance").
//!
//! actix-web writes every response body through its own buffer, one copy more. So
//! each connection is a [`Connection`]: the socket plus a [`Handoff`] slot that
//! request handlers reach through the request's connection data. A download answers
//! with a [`FileBody`], which yields no bytes: on its first poll it puts its files in
//! the slot and waits. actix-web then writes what it has buffered (the status line
//! and headers) and calls the connection's `poll_flush`, which it only does once its
//! buffer is empty. There, with everything actix-web wrote already in the socket, the
//! connection sends the files, then wakes the body, which ends. The response carries
//! a Content-Length and no chunking, so actix-web writes nothing around the file
//! bytes, and it writes nothing else on the connection while the body is unfinished.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Extensions;
use berth_storage::objects::FilePiece;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An accepted connection: the socket and the slot its downloads are handed through.
pub struct Connection {
    socket: TcpStream,
    handoff: Rc<Handoff>,
}

/// A connection's slot for the download in progress (at most one: HTTP/1.1 answers
/// one request at a time).
#[derive(Default)]
pub struct Handoff(RefCell<Option<Transfer>>);

struct Transfer {
    pieces: VecDeque<FilePiece>,
    /// How much to read for the next write: what the socket took last time, doubled
    /// (at most the buffer). A slow reader's socket takes a few KiB per wake-up; reading
    /// 512 KiB for each would copy a hundred times what it delivers.
    window: usize,
    /// Set once every byte is in the socket, or sending failed.
    outcome: Option<io::Result<()>>,
    /// The body waiting for the outcome.
    waker: Waker,
}

impl Connection {
    pub fn new(socket: TcpStream) -> Connection {
        Connection {
            socket,
            handoff: Rc::default(),
        }
    }

    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.socket.peer_addr().ok()
    }

    /// For actix-http's `on_connect_ext`: makes the slot the requests' connection data.
    pub fn attach(&self, data: &mut Extensions) {
        data.insert(self.handoff.clone());
    }

    /// Sends the files of the transfer in the slot, if any; `Ready` once all are out.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slot = self.handoff.0.borrow_mut();
        let Some(transfer) = slot.as_mut().filter(|t| t.outcome.is_none()) else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(send_pieces(
            &self.socket,
            &mut transfer.pieces,
            &mut transfer.window,
            cx
        ));
        let reply = match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        transfer.outcome = Some(result);
        transfer.waker.wake_by_ref();
        Poll::Ready(reply)
    }
}

/// Sends each piece in turn, as far as the socket takes it.
fn send_pieces(
    socket: &TcpStream,
    pieces: &mut VecDeque<FilePiece>,
    window: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while let Some((file, range)) = pieces.front_mut() {
        if range.is_empty() {
            pieces.pop_front();
            continue;
        }
        ready!(socket.poll_write_ready(cx))?;
        let sent = BUFFER.with_borrow_mut(|buffer| -> io::Result<u64> {
            let want = usize::try_from(range.end - range.start)
                .unwrap_or(usize::MAX)
                .min(*window);
            let read = file.read_at(&mut buffer[..want], range.start)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob file is shorter than recorded",
                ));
            }
            let mut written = 0;
            while written < read {
                match socket.try_write(&buffer[written..read]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    // Readiness is now cleared: the next poll waits for the socket. What
                    // was read but not written is read again then.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            *window = (written * 2).clamp(MIN_READ, BUFFER_SIZE);
            Ok(written as u64)
        });
        let sent = match sent {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        range.start += sent;
        crate::observe::METRICS.sent(sent);
    }
    Poll::Ready(Ok(()))
}

/// How much of a file is read per write to the socket, at most and at least.
const BUFFER_SIZE: usize = 512 * 1024;
const MIN_READ: usize = 16 * 1024;

thread_local! {
    /// One per worker thread: a connection reads into it and writes it out in one go,
    /// so no connection holds a buffer between polls (memory stays bounded by the
    /// worker count, whatever the number of downloads).
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; BUFFER_SIZE].into_boxed_slice());
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    /// actix-web calls this only with its own buffer written out: the moment a handed
    /// over file may follow.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

/// A response body sent by the connection from files (see the module docs). The
/// response must say its length (`HttpResponseBuilder::no_chunking`).
pub struct FileBody {
    handoff: Rc<Handoff>,
    pieces: Option<VecDeque<FilePiece>>,
}

impl FileBody {
    pub fn new(handoff: Rc<Handoff>, pieces: Vec<FilePiece>) -> FileBody {
        FileBody {
            handoff,
            pieces: Some(pieces.into()),
        }
    }
}

impl MessageBody for FileBody {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        // Not `Sized`: actix-web would then expect to write the bytes itself.
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, io::Error>>> {
        let this = self.get_mut();
        let mut slot = this.handoff.0.borrow_mut();
        if let Some(pieces) = this.pieces.take() {
            *slot = Some(Transfer {
                pieces,
                window: BUFFER_SIZE,
                outcome: None,
                waker: cx.waker().clone(),
            });
            return Poll::Pending;
        }
        let Some(transfer) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        match transfer.outcome.take() {
            None => {
                transfer.waker = cx.waker().clone();
                Poll::Pending
            }
            Some(outcome) => {
                *slot = None;
                Poll::Ready(outcome.err().map(Err))
            }
        }
    }
}

impl Drop for FileBody {
    /// A response dropped mid-way (the client left) must not leave its files to the
    /// connection.
    fn drop(&mut self) {
        if self.pieces.is_none() {
            self.handoff.0.borrow_mut().take();
        }
    }
}
