//! One buffered, line-oriented connection over any `AsyncRead + AsyncWrite`: TCP, TLS and
//! in-memory test streams all go through it. Lines are length-capped so a server cannot make
//! the prober buffer without bound, and every line in or out lands in the redacted transcript.

use std::io;

use bytes::BufMut as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::transcript::Transcript;

/// Longest line accepted from a server. IMAP capability lines of large servers stay far below.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;
/// Most bytes accepted in one multi-line POP3 response (CAPA).
pub const DEFAULT_MAX_RESPONSE: usize = 64 * 1024;

const READ_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the server closed the connection")]
    Closed,
    #[error("the server sent a line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("the server sent a response longer than {limit} bytes")]
    ResponseTooLong { limit: usize },
    #[error(
        "the server sent {0} bytes before the TLS handshake (possible injection); refusing to upgrade"
    )]
    BufferedBeforeUpgrade(usize),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Splits what a stream delivers into lines, never holding more than one line's worth (plus
/// one read) however long a line the peer sends. The prober's [`Connection`] and the
/// simulator's server side both read through it.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max_line: usize,
}

impl LineBuffer {
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: Vec::with_capacity(READ_CHUNK),
            max_line,
        }
    }

    /// Bytes received and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next line without its CRLF (or bare LF); `None` once the peer closed the stream.
    pub async fn read_line<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> Result<Option<Vec<u8>>, ConnError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max_line {
                    return Err(self.too_long());
                }
                return Ok(Some(line));
            }
            scanned = self.buf.len();
            if self.buf.len() > self.max_line {
                return Err(self.too_long());
            }
            if !self.fill(stream).await? {
                return Ok(None);
            }
        }
    }

    /// Exactly `n` raw bytes (an IMAP literal); `None` once the peer closed the stream first.
    /// Callers bound `n`.
    pub async fn read_exact<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        n: usize,
    ) -> Result<Option<Vec<u8>>, ConnError> {
        while self.buf.len() < n {
            if !self.fill(stream).await? {
                return Ok(None);
            }
        }
        Ok(Some(self.buf.drain(..n).collect()))
    }

    /// Reads once more; false at the end of the stream. The read goes into the buffer's spare
    /// capacity: nothing is zeroed first, and the buffer grows only when a line does not fit.
    async fn fill<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> io::Result<bool> {
        self.buf.reserve(READ_CHUNK);
        let mut chunk = (&mut self.buf).limit(READ_CHUNK);
        let n = stream.read_buf(&mut chunk).await?;
        Ok(n > 0)
    }

    fn too_long(&self) -> ConnError {
        ConnError::LineTooLong {
            limit: self.max_line,
        }
    }
}

/// A line-oriented connection with a bounded read buffer.
pub struct Connection<S> {
    stream: S,
    lines: LineBuffer,
    transcript: Transcript,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, transcript: Transcript) -> Self {
        Connection {
            stream,
            lines: LineBuffer::new(DEFAULT_MAX_LINE),
            transcript,
        }
    }

    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.lines.max_line = max_line;
        self
    }

    /// Reads one line, without its CRLF, and records it.
    pub async fn read_line(&mut self) -> Result<String, ConnError> {
        let line = self.read_raw_line().await?;
        self.transcript.server(&line);
        Ok(line)
    }

    /// Reads a dot-terminated POP3 multi-line body (after its status line), undoing
    /// dot-stuffing, with at most `max_total` bytes in all.
    pub async fn read_multiline(&mut self, max_total: usize) -> Result<Vec<String>, ConnError> {
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.read_line().await?;
            if line == "." {
                return Ok(lines);
            }
            total += line.len() + 2;
            if total > max_total {
                return Err(ConnError::ResponseTooLong { limit: max_total });
            }
            let unstuffed = line.strip_prefix('.').unwrap_or(&line).to_string();
            lines.push(unstuffed);
        }
    }

    async fn read_raw_line(&mut self) -> Result<String, ConnError> {
        match self.lines.read_line(&mut self.stream).await? {
            // Valid UTF-8 (nearly every line) becomes the String without a copy.
            Some(line) => Ok(String::from_utf8(line)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
            None => Err(ConnError::Closed),
        }
    }

    /// Sends one command line, recorded with its credentials redacted.
    pub async fn send(&mut self, line: &str) -> Result<(), ConnError> {
        self.transcript.client(line);
        self.write_line(line).await
    }

    /// Sends a line that is secret as a whole (a SASL answer); recorded as `***`.
    pub async fn send_secret(&mut self, line: &str) -> Result<(), ConnError> {
        self.transcript.client_secret();
        self.write_line(line).await
    }

    async fn write_line(&mut self, line: &str) -> Result<(), ConnError> {
        let mut out = Vec::with_capacity(line.len() + 2);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends raw bytes (an IMAP literal's content) without a line ending; recorded as `***`.
    pub async fn send_secret_bytes(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.transcript.client_secret();
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Gives the stream back for a TLS upgrade. Refused while the server has sent bytes we have
    /// not read: they would be taken as coming from inside the TLS session (CVE-2011-0411).
    pub fn into_parts(self) -> Result<(S, Transcript), (ConnError, Transcript)> {
        if self.lines.buffered() > 0 {
            return Err((
                ConnError::BufferedBeforeUpgrade(self.lines.buffered()),
                self.transcript,
            ));
        }
        Ok((self.stream, self.transcript))
    }

    /// Ends the connection politely where possible; errors are of no interest any more.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// A note of the prober's own in the transcript, in order with the dialogue.
    pub fn note(&mut self, text: &str) {
        self.transcript.note(text);
    }

    /// The transcript, to register a secret before the line that carries it is sent.
    pub fn transcript_mut(&mut self) -> &mut Transcript {
        &mut self.transcript
    }

    /// Takes the transcript, dropping the connection.
    pub fn into_transcript(self) -> Transcript {
        self.transcript
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Password;

    fn conn(input: &'static [u8]) -> Connection<tokio_test_stream::Stream> {
        conn_chunked(input, 3)
    }

    fn conn_chunked(input: &'static [u8], chunk: usize) -> Connection<tokio_test_stream::Stream> {
        Connection::new(
            tokio_test_stream::Stream::new(input, chunk),
            Transcript::new(&Password::new("pw")),
        )
    }

    /// A tiny in-memory duplex whose read side is fixed bytes and whose writes are kept.
    mod tokio_test_stream {
        use std::pin::Pin;
        use std::task::{Context, Poll};
        use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

        pub struct Stream {
            input: &'static [u8],
            chunk: usize,
            written: Vec<u8>,
        }

        impl Stream {
            pub fn new(input: &'static [u8], chunk: usize) -> Self {
                Stream {
                    input,
                    chunk,
                    written: Vec::new(),
                }
            }
        }

        impl AsyncRead for Stream {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                // A few bytes at a time, to exercise line reassembly.
                let n = self.chunk.min(self.input.len()).min(buf.remaining());
                let (now, rest) = self.input.split_at(n);
                buf.put_slice(now);
                self.input = rest;
                Poll::Ready(Ok(()))
            }
        }

        impl AsyncWrite for Stream {
            fn poll_write(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                self.written.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
    }

    #[tokio::test]
    async fn reads_lines_split_across_reads() {
        let mut c = conn(b"+OK hello\r\n-ERR no\nlast");
        assert_eq!(c.read_line().await.unwrap(), "+OK hello");
        assert_eq!(c.read_line().await.unwrap(), "-ERR no");
        assert!(matches!(c.read_line().await, Err(ConnError::Closed)));
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_refused() {
        let mut c = conn(b"+OK caf\xe9 \xff\r\n+OK next\r\n");
        assert_eq!(c.read_line().await.unwrap(), "+OK caf\u{fffd} \u{fffd}");
        assert_eq!(c.read_line().await.unwrap(), "+OK next");
    }

    #[tokio::test]
    async fn caps_line_length() {
        let long: &'static [u8] = Box::leak(vec![b'a'; 100_000].into_boxed_slice());
        let mut c = conn(long).with_max_line(1024);
        assert!(matches!(
            c.read_line().await,
            Err(ConnError::LineTooLong { limit: 1024 })
        ));
    }

    #[tokio::test]
    async fn multiline_unstuffs_and_caps() {
        let mut c = conn(b"TOP\r\n..dot\r\nUSER\r\n.\r\n");
        assert_eq!(
            c.read_multiline(1000).await.unwrap(),
            vec!["TOP", ".dot", "USER"]
        );
        let mut c = conn(b"A\r\nB\r\nC\r\n.\r\n");
        assert!(matches!(
            c.read_multiline(5).await,
            Err(ConnError::ResponseTooLong { limit: 5 })
        ));
    }

    #[tokio::test]
    async fn refuses_upgrade_with_buffered_bytes() {
        let mut c = conn_chunked(b"+OK Begin TLS\r\n+OK injected\r\n", 1000);
        c.read_line().await.unwrap();
        match c.into_parts() {
            Err((ConnError::BufferedBeforeUpgrade(n), _)) => assert!(n > 0),
            _ => panic!("upgrade with buffered bytes must be refused"),
        }
        let mut c = conn(b"+OK Begin TLS\r\n");
        c.read_line().await.unwrap();
        assert!(c.into_parts().is_ok());
    }

    #[tokio::test]
    async fn records_redacted_commands() {
        let mut c = conn(b"");
        c.send("PASS pw").await.unwrap();
        c.send_secret("bm90IHNob3du").await.unwrap();
        let lines = c.into_transcript().into_lines();
        assert_eq!(lines, vec!["C: PASS ***", "C: ***"]);
    }
}
