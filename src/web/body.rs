//! Response bodies: whole (pages, short answers), or streamed a chunk at a time from a
//! blocking task (`/metrics`), so that an exposition of ten thousand accounts is never held
//! whole, neither by its writer nor by the connection sending it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// What a streamed body is handed in: large enough that a chunk costs one write on the
/// socket, small enough that the chunks in flight stay a few hundred KiB.
const CHUNK: usize = 64 * 1024;
/// Chunks written ahead of the client's reading.
const CHUNKS_AHEAD: usize = 4;

pub(crate) enum Body {
    /// The whole body; `None` once sent.
    Whole(Option<Bytes>),
    /// Chunks from a [`ChunkWriter`]; ends when the writer is dropped: well if it was
    /// finished, else with an error, so that the connection is cut rather than a partial
    /// exposition passed off as whole.
    Streamed {
        rx: mpsc::Receiver<Bytes>,
        finished: Arc<AtomicBool>,
    },
}

impl Body {
    /// A streamed body and the writer that feeds it.
    pub(crate) fn streamed() -> (Body, ChunkWriter) {
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let finished = Arc::new(AtomicBool::new(false));
        let writer = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            finished: Arc::clone(&finished),
        };
        (Body::Streamed { rx, finished }, writer)
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::Whole(Some(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Streamed { rx, finished } => rx.poll_recv(cx).map(|chunk| match chunk {
                Some(b) => Some(Ok(Frame::data(b))),
                None if finished.load(Ordering::SeqCst) => None,
                None => Some(Err(io::Error::other("the body was cut short"))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Whole(None))
    }

    /// Exact for a whole body, so that it goes out with a `Content-Length`.
    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Streamed { .. } => SizeHint::default(),
        }
    }
}

/// Hands what is written to its [`Body::Streamed`] in chunks of [`CHUNK`] bytes, blocking
/// while [`CHUNKS_AHEAD`] chunks wait: the body is written at the pace the client reads it.
/// Call it from a blocking thread only. Once the body is gone (the client went away or was
/// closed for not reading), writes fail with `BrokenPipe`.
pub(crate) struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    finished: Arc<AtomicBool>,
}

impl ChunkWriter {
    /// Sends what is left and ends the body well. A writer dropped without this (its writer
    /// failed or panicked) ends it with an error.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.send()?;
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the response was dropped"))
    }
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn a_streamed_body_carries_everything_written_in_chunks() {
        let (body, mut writer) = Body::streamed();
        let text: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let written = text.clone();
        let task = tokio::task::spawn_blocking(move || {
            writer.write_all(&written)?;
            writer.finish()
        });
        let mut body = body;
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= CHUNK);
            got.extend_from_slice(&data);
            chunks += 1;
        }
        task.await.unwrap().unwrap();
        assert_eq!(got, text);
        assert_eq!(chunks, 300_000usize.div_ceil(CHUNK));
    }

    #[tokio::test]
    async fn writing_fails_once_the_body_is_dropped() {
        let (body, mut writer) = Body::streamed();
        drop(body);
        let failed = tokio::task::spawn_blocking(move || writer.write_all(&[b'x'; 2 * CHUNK]))
            .await
            .unwrap();
        assert_eq!(failed.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn a_writer_dropped_unfinished_ends_the_body_with_an_error() {
        let (mut body, mut writer) = Body::streamed();
        tokio::task::spawn_blocking(move || {
            writer.write_all(&[b'x'; CHUNK + 10]).unwrap();
            writer.flush().unwrap();
            drop(writer);
        })
        .await
        .unwrap();
        let mut data = 0;
        let error = loop {
            match body.frame().await {
                Some(Ok(frame)) => data += frame.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("the body ended well without being finished"),
            }
        };
        assert_eq!(data, CHUNK + 10);
        assert!(error.to_string().contains("cut short"), "{error}");
    }

    #[test]
    fn a_whole_body_has_an_exact_length() {
        let body = Body::from(Bytes::from_static(b"OK\n"));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(3));
    }
}
