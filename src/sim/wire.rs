//! The server end of one simulated connection: plain or TLS stream, a bounded line reader and
//! the writers the pathological behaviours need.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_native_tls::{TlsAcceptor, TlsStream};

use crate::conn::{ConnError, LineBuffer};

use super::MAX_LINE;

/// Size of each write of an endless line: big enough to be cheap, small enough to stop soon.
const ENDLESS_CHUNK: usize = 1024;

/// A TCP stream, before or after its TLS handshake.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection as the server sees it.
pub(super) struct Wire {
    stream: Stream,
    lines: LineBuffer,
}

impl Wire {
    pub(super) fn new(stream: Stream) -> Self {
        Wire {
            stream,
            lines: LineBuffer::new(MAX_LINE),
        }
    }

    pub(super) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The next line without its CRLF (or bare LF); `None` when the client has gone. A line
    /// longer than [`MAX_LINE`] is an error: the caller closes, as real servers do.
    pub(super) async fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.lines
            .read_line(&mut self.stream)
            .await
            .map_err(into_io)
    }

    /// Exactly `n` raw bytes (an IMAP literal); `None` when the client goes away first.
    /// Callers bound `n`.
    pub(super) async fn read_exact(&mut self, n: usize) -> io::Result<Option<Vec<u8>>> {
        self.lines
            .read_exact(&mut self.stream, n)
            .await
            .map_err(into_io)
    }

    pub(super) async fn send(&mut self, text: &str) -> io::Result<()> {
        self.stream.write_all(text.as_bytes()).await?;
        self.stream.flush().await
    }

    /// Sends `text` one byte per `interval`.
    pub(super) async fn drip(&mut self, text: &str, interval: Duration) -> io::Result<()> {
        for byte in text.as_bytes() {
            tokio::time::sleep(interval).await;
            self.stream.write_all(std::slice::from_ref(byte)).await?;
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// Sends `prefix` and then bytes without a newline until the client goes away. Nothing is
    /// accumulated: the same chunk is written again and again.
    pub(super) async fn endless(&mut self, prefix: &str) -> io::Result<()> {
        self.stream.write_all(prefix.as_bytes()).await?;
        let chunk = [b'x'; ENDLESS_CHUNK];
        loop {
            self.stream.write_all(&chunk).await?;
            self.stream.flush().await?;
        }
    }

    /// Runs the TLS handshake on a plain connection (STLS/STARTTLS). Bytes the client sent
    /// after the command and before the handshake are discarded, never read as commands
    /// (the STARTTLS command-injection defence of RFC 3207 section 6).
    pub(super) async fn upgrade(self, acceptor: &TlsAcceptor) -> io::Result<Wire> {
        let tcp = match self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => return Err(io::Error::other("TLS is already active")),
        };
        let tls = acceptor.accept(tcp).await.map_err(io::Error::other)?;
        Ok(Wire::new(Stream::Tls(Box::new(tls))))
    }

    pub(super) async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

fn into_io(e: ConnError) -> io::Error {
    match e {
        ConnError::Io(e) => e,
        ConnError::LineTooLong { .. } => {
            io::Error::new(io::ErrorKind::InvalidData, "command line too long")
        }
        other => io::Error::other(other.to_string()),
    }
}
