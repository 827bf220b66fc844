//! Time limits on a downstream connection that no protocol library enforces for us: a
//! client that connects and sends nothing (or a request head one byte at a time), a
//! connection that sits idle, a client that stops reading what we send.
//!
//! The connection's I/O is wrapped in [`Watched`], which only bumps counters (no clock
//! reads per I/O call); a [`Watchdog`] in the connection's task samples them a few times
//! per shortest timeout and says when to close. Precision is a quarter of that timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::body::Hold;
use crate::config::ListenerTimeouts;
use crate::metrics::ListenerCounters;

/// What the connection has done, as seen by its I/O and its request handler.
#[derive(Default)]
pub struct Activity {
    reads: AtomicU64,
    writes: AtomicU64,
    write_blocked: AtomicBool,
    /// Requests whose response head is not yet sent.
    in_flight: AtomicUsize,
    requests: AtomicU64,
    http2: AtomicBool,
    /// Halves of exchanges not yet over: a request body still arriving, a response whose
    /// body is not yet all handed to the connection ([`Activity::exchange`]).
    open: Arc<AtomicUsize>,
    /// The last read found nothing to read (and nothing came since).
    read_pending: AtomicBool,
    /// A flush could not finish: bytes may still wait in a buffer on our side.
    flush_pending: AtomicBool,
    /// A request asked to switch protocols: its connection is never taken apart.
    upgrade: AtomicBool,
    /// The watchdog saw no bytes either way and nothing in flight for a whole tick.
    quiet: AtomicBool,
    /// HTTP/1.1 state (hyper's buffers) is built: the watchdog ticks at least every
    /// [`REST_TICK`] so that it is freed soon after the connection goes quiet.
    built: AtomicBool,
}

/// How often the watchdog looks at a connection that holds HTTP/1.1 state: a keep-alive
/// connection quiet for one to two of these is taken apart (bench/README.md: nginx frees
/// an idle connection's buffers at once; a busy connection pays one extra wake-up here).
pub const REST_TICK: Duration = Duration::from_millis(500);

impl Activity {
    /// A request head arrived; the guard marks it answered when dropped.
    pub fn request(self: &Arc<Self>, http2: bool) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        InFlight(self.clone())
    }

    /// A half of an exchange (a request body, a response) that keeps the connection
    /// from being put at rest until it is dropped.
    pub fn exchange(&self) -> Hold {
        Hold::new(&self.open)
    }

    /// A request asked to switch protocols.
    pub fn upgrade_requested(&self) {
        self.upgrade.store(true, Ordering::Relaxed);
    }

    pub fn upgrading(&self) -> bool {
        self.upgrade.load(Ordering::Relaxed)
    }

    /// The client sent something and the connection's HTTP/1.1 state is built (`true`),
    /// or it was taken apart (`false`).
    pub fn built(&self, built: bool) {
        self.quiet.store(false, Ordering::Relaxed);
        self.built.store(built, Ordering::Relaxed);
    }

    /// Whether the connection has been quiet for a watchdog tick (asked once: the answer
    /// is reset) and has nothing in progress: no exchange open, everything it wrote
    /// flushed, and its last read found nothing. An HTTP/1.1 connection in that state can
    /// be taken apart (its buffers freed) and rebuilt when the client sends again, without
    /// losing a byte either way. Not sooner than a tick: taking a busy keep-alive
    /// connection apart between two requests and building it again cost ~6 800
    /// instructions a request (callgrind), a sixth of the whole request.
    pub fn at_rest(&self) -> bool {
        if !self.quiet.load(Ordering::Relaxed) {
            return false;
        }
        self.quiet.store(false, Ordering::Relaxed);
        self.open.load(Ordering::Relaxed) == 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.read_pending.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.flush_pending.load(Ordering::Relaxed)
            && !self.upgrade.load(Ordering::Relaxed)
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A connection's I/O, counting its progress for the watchdog.
    pub struct Watched<I> {
        #[pin]
        io: I,
        activity: Arc<Activity>,
        // The listener's byte counters: one atomic add per read or write call.
        counters: Arc<ListenerCounters>,
    }
}

impl<I> Watched<I> {
    pub fn new(io: I, activity: Arc<Activity>, counters: Arc<ListenerCounters>) -> Self {
        Watched { io, activity, counters }
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
            this.counters.received.inc_by(read as u64);
        }
        this.activity.read_pending.store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write(cx, buf);
        note_write(this.activity, this.counters, &result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write_vectored(cx, bufs);
        note_write(this.activity, this.counters, &result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.io.poll_flush(cx);
        this.activity
            .flush_pending
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

fn note_write(activity: &Activity, counters: &ListenerCounters, result: &Poll<io::Result<usize>>) {
    match result {
        Poll::Pending => activity.write_blocked.store(true, Ordering::Relaxed),
        Poll::Ready(Ok(n)) if *n > 0 => {
            counters.sent.inc_by(*n as u64);
            activity.writes.fetch_add(1, Ordering::Relaxed);
            activity.write_blocked.store(false, Ordering::Relaxed);
        }
        Poll::Ready(_) => {}
    }
}

/// Why the watchdog ended a connection (the `reason` of
/// `weft_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request head within `header_read` of accept or of the previous
    /// request (HTTP/1.1), or no first request at all.
    HeaderRead,
    /// Nothing in flight and no bytes either way for `idle`.
    Idle,
    /// A write to the client blocked for `send_idle`.
    Send,
}

impl Expiry {
    pub fn label(self) -> &'static str {
        match self {
            Expiry::HeaderRead => "header_read_timeout",
            Expiry::Idle => "idle_timeout",
            Expiry::Send => "send_timeout",
        }
    }
}

/// Samples one connection's [`Activity`].
pub struct Watchdog {
    activity: Arc<Activity>,
    timeouts: ListenerTimeouts,
    tick: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Sample {
    reads: u64,
    writes: u64,
    requests: u64,
    in_flight: usize,
}

impl Watchdog {
    pub fn new(activity: Arc<Activity>, timeouts: &ListenerTimeouts) -> Self {
        let shortest = timeouts.header_read.min(timeouts.idle).min(timeouts.send_idle);
        Watchdog {
            activity,
            timeouts: timeouts.clone(),
            tick: (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(5)),
        }
    }

    fn sample(&self) -> Sample {
        let a = &self.activity;
        Sample {
            reads: a.reads.load(Ordering::Relaxed),
            writes: a.writes.load(Ordering::Relaxed),
            requests: a.requests.load(Ordering::Relaxed),
            in_flight: a.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Resolves when the connection has outstayed one of its timeouts.
    pub async fn expired(self) -> Expiry {
        let t = &self.timeouts;
        let mut last = self.sample();
        // When the connection last made progress of each kind.
        let (mut progressed, mut wrote) = (Instant::now(), Instant::now());
        // When it last became idle (accept, or the end of a request), and when bytes of a
        // new request head started arriving after that.
        let mut idle_since = Instant::now();
        let mut head_started: Option<Instant> = None;
        let rest_tick = self.tick.min(REST_TICK);
        let mut ticked = Instant::now();
        loop {
            let sleep = tokio::time::sleep(self.tick);
            tokio::pin!(sleep);
            // A connection whose HTTP/1.1 state gets built during a long tick is looked at
            // again after a short one, so that it is taken apart soon after it goes quiet.
            std::future::poll_fn(|cx| {
                if self.activity.built.load(Ordering::Relaxed) && sleep.deadline() > ticked + rest_tick {
                    sleep.as_mut().reset(ticked + rest_tick);
                }
                sleep.as_mut().poll(cx)
            })
            .await;
            let now = Instant::now();
            ticked = now;
            let s = self.sample();
            if s.writes != last.writes {
                wrote = now;
            }
            if s.reads != last.reads || s.writes != last.writes {
                progressed = now;
            }
            if self.activity.write_blocked.load(Ordering::Relaxed) && now - wrote >= t.send_idle {
                return Expiry::Send;
            }
            if s.in_flight > 0 {
                head_started = None;
            } else {
                if s.requests != last.requests || last.in_flight > 0 {
                    idle_since = now;
                    head_started = None;
                } else if s.reads != last.reads && head_started.is_none() {
                    head_started = Some(now);
                }
                let http2 = self.activity.http2.load(Ordering::Relaxed);
                if s.requests == 0 && now - idle_since >= t.header_read {
                    return Expiry::HeaderRead;
                }
                // HTTP/2 sends frames between requests (PING, SETTINGS): bytes after a
                // request are not the start of a slow head there.
                if !http2 && head_started.is_some_and(|h| now - h >= t.header_read) {
                    return Expiry::HeaderRead;
                }
                if now - progressed >= t.idle && now - idle_since >= t.idle {
                    return Expiry::Idle;
                }
                if s == last {
                    self.activity.quiet.store(true, Ordering::Relaxed);
                }
            }
            last = s;
        }
    }
}
