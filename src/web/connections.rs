//! The web side's open connections: a cap that never locks a new client out, because a new
//! connection at the cap closes the one that has been quiet the longest; and a stream wrapper
//! that notes each connection's activity and closes one whose peer stops reading.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

/// Every open connection, with how recently each moved a byte.
pub(crate) struct Connections {
    cap: usize,
    /// Bumped on every read or write that moves bytes: a connection's last tick orders it
    /// from the quietest to the busiest, without a clock.
    tick: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
}

/// One connection's standing.
pub(crate) struct Slot {
    last_active: AtomicU64,
    /// Requests being answered: a connection that is answering is closed last.
    in_service: AtomicUsize,
    closed: Notify,
}

impl Connections {
    pub(crate) fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap: cap.max(1),
            tick: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Open connections.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self, slot: &Slot) {
        let now = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        slot.last_active.store(now, Ordering::Relaxed);
    }

    /// Registers a new connection. At the cap, the quietest connection that is not answering
    /// a request is told to close (the quietest of all when every one is), so idle and slow
    /// clients can hold at most the cap and never keep a scraper out.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            last_active: AtomicU64::new(0),
            in_service: AtomicUsize::new(0),
            closed: Notify::new(),
        });
        self.touch(&slot);
        let mut open = self.lock();
        while open.len() >= self.cap {
            let victim = open
                .iter()
                .min_by_key(|(id, slot)| {
                    let answering = slot.in_service.load(Ordering::Relaxed) > 0;
                    (answering, slot.last_active.load(Ordering::Relaxed), **id)
                })
                .map(|(id, _)| *id);
            let Some(victim) = victim.and_then(|id| open.remove(&id)) else {
                break;
            };
            // Stored if the connection is not waiting yet: it closes as soon as it looks.
            victim.closed.notify_one();
            tracing::debug!("connection cap reached: closed the quietest connection");
        }
        open.insert(id, Arc::clone(&slot));
        Admitted {
            table: Arc::clone(self),
            id,
            slot,
        }
    }
}

/// A registered connection; dropping it unregisters it.
pub(crate) struct Admitted {
    table: Arc<Connections>,
    id: u64,
    slot: Arc<Slot>,
}

impl Admitted {
    /// Completes when the cap made room by closing this connection.
    pub(crate) async fn evicted(&self) {
        self.slot.closed.notified().await;
    }

    /// Marks a request in service until the returned guard is dropped.
    pub(crate) fn serving(&self) -> Serving {
        self.slot.in_service.fetch_add(1, Ordering::Relaxed);
        Serving(Arc::clone(&self.slot))
    }

    /// `stream`, noting its activity here and closing it when a write makes no progress for
    /// `write_stall` (a peer that stops reading).
    pub(crate) fn track<S>(&self, stream: S, write_stall: Duration) -> Tracked<S> {
        Tracked {
            inner: stream,
            table: Arc::clone(&self.table),
            slot: Arc::clone(&self.slot),
            write_stall,
            stalled: None,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if open
            .get(&self.id)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            open.remove(&self.id);
        }
    }
}

/// A request in service.
pub(crate) struct Serving(Arc<Slot>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.in_service.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's stream, reporting activity to its table.
pub(crate) struct Tracked<S> {
    inner: S,
    table: Arc<Connections>,
    slot: Arc<Slot>,
    write_stall: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> Tracked<S> {
    fn progressed(&mut self) {
        self.stalled = None;
        self.table.touch(&self.slot);
    }

    /// Called when a write could not proceed: an error once it has not for `write_stall`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let write_stall = self.write_stall;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(write_stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.table.touch(&self.slot);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                self.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_stall(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                self.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_stall(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_stall(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
