//! The HTTP endpoint's listener, bounded: a connection that moves no byte
//! for [`IDLE`] between requests is closed, a request has [`ANSWER`] from
//! its last byte in to be answered (a head sent a byte at a time can hold a
//! connection no longer than that), none lives longer than [`LIFETIME`],
//! and at most [`MAX_CONNECTIONS`] are
//! open at once (more are closed as they come). Without these a few hundred
//! idle TCP connections kept `/metrics` from answering for as long as they
//! were held.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A connection that moves no byte this long is closed.
pub const IDLE: Duration = Duration::from_secs(5);
/// How long a request may wait for its answer once bytes came in (a
/// handler waiting on a busy hub): the idle time does not apply then, or
/// a slow answer would be cut.
pub const ANSWER: Duration = Duration::from_secs(30);
/// No connection lives longer (a scraper reconnects; keep-alive is kept
/// within it).
pub const LIFETIME: Duration = Duration::from_secs(60);
/// Connections open at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 256;

/// What the listener turned away, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpLimits {
    /// Connections closed at accept because [`MAX_CONNECTIONS`] were open.
    pub refused: AtomicU64,
    /// Connections closed for moving no byte for [`IDLE`], or at [`LIFETIME`].
    pub timed_out: AtomicU64,
}

/// A TCP listener whose connections are [`TimedIo`] and counted.
pub struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    limits: Arc<HttpLimits>,
    idle: Duration,
    answer: Duration,
    lifetime: Duration,
}

impl BoundedListener {
    pub fn new(inner: TcpListener, limits: Arc<HttpLimits>) -> Self {
        Self::with(inner, limits, MAX_CONNECTIONS, IDLE, ANSWER, LIFETIME)
    }

    /// With other bounds (tests).
    pub fn with(
        inner: TcpListener,
        limits: Arc<HttpLimits>,
        max: usize,
        idle: Duration,
        answer: Duration,
        lifetime: Duration,
    ) -> Self {
        BoundedListener {
            inner,
            permits: Arc::new(Semaphore::new(max)),
            limits,
            idle,
            answer,
            lifetime,
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = TimedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.limits.refused.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            return (
                TimedIo::new(
                    stream,
                    permit,
                    self.limits.clone(),
                    (self.idle, self.answer, self.lifetime),
                ),
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails (and so is closed by the server) once it has
/// moved no byte for the idle time, or at the end of its lifetime.
pub struct TimedIo {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    limits: Arc<HttpLimits>,
    idle: Duration,
    end: Instant,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
    /// How long a request may wait for its answer.
    answer: Duration,
}

impl TimedIo {
    fn new(
        io: TcpStream,
        permit: OwnedSemaphorePermit,
        limits: Arc<HttpLimits>,
        (idle, answer, lifetime): (Duration, Duration, Duration),
    ) -> Self {
        let now = Instant::now();
        let end = now + lifetime;
        TimedIo {
            io,
            _permit: permit,
            limits,
            idle,
            end,
            deadline: Box::pin(tokio::time::sleep_until((now + idle).min(end))),
            expired: false,
            answer,
        }
    }

    /// Bytes came in: a request is under way, and has [`ANSWER`] (not the
    /// idle time) to be answered, never past the lifetime.
    fn read_progress(&mut self) {
        let next = (Instant::now() + self.answer.max(self.idle)).min(self.end);
        self.deadline.as_mut().reset(next);
    }

    /// Bytes went out: the answer; the idle time starts again.
    fn write_progress(&mut self) {
        let next = (Instant::now() + self.idle).min(self.end);
        self.deadline.as_mut().reset(next);
    }

    /// When nothing moved: `Err` once the deadline has passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.expired || self.deadline.as_mut().poll(cx).is_ready() {
            if !self.expired {
                self.expired = true;
                self.limits.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "metrics endpoint: connection idle or too old",
            ));
        }
        Poll::Pending
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.read_progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check(cx).map(Err),
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.write_progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.check(cx).map(Err),
            r => r,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a one-route app on a bounded listener: at most 2 connections,
    /// idle 200 ms, 4 s to answer, lifetime 8 s (`/slow` answers after
    /// 500 ms: over the idle time, well within the answer time, even on a
    /// loaded machine).
    async fn serve() -> (SocketAddr, Arc<HttpLimits>) {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let limits = Arc::new(HttpLimits::default());
        let listener = BoundedListener::with(
            inner,
            limits.clone(),
            2,
            Duration::from_millis(200),
            Duration::from_secs(4),
            Duration::from_secs(8),
        );
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "slow ok"
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, limits)
    }

    /// Reads until the server closes the connection (EOF or reset); false
    /// if it is still open after 30 s.
    async fn closed_by_server(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 256];
        let read = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .is_ok()
    }

    async fn get_path(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    async fn get(addr: SocketAddr) -> String {
        get_path(addr, "/").await
    }

    /// A handler slower than the idle time is still answered: the idle
    /// time runs between requests, not while one is answered.
    #[tokio::test]
    async fn a_slow_answer_is_not_cut_by_the_idle_time() {
        let (addr, limits) = serve().await;
        assert!(get_path(addr, "/slow").await.ends_with("slow ok"));
        assert_eq!(limits.timed_out.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn idle_and_surplus_connections_are_closed_and_the_endpoint_answers_again() {
        let (addr, limits) = serve().await;
        assert!(get(addr).await.ends_with("ok"));
        // Two idle connections take every slot; a third is closed at once.
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        a.write_all(b"GET / HT").await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(&mut c).await, "the surplus connection");
        assert_eq!(limits.refused.load(Ordering::Relaxed), 1);
        // The idle ones (one mid-request) are closed by the server.
        assert!(closed_by_server(&mut a).await, "a half-sent request");
        assert!(closed_by_server(&mut b).await, "an idle connection");
        assert_eq!(limits.timed_out.load(Ordering::Relaxed), 2);
        assert!(get(addr).await.ends_with("ok"), "served again");
    }

    #[tokio::test]
    async fn a_connection_that_drips_bytes_is_closed_at_its_lifetime() {
        let (addr, limits) = serve().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let drip = async {
            // A request head a byte at a time, never waiting 200 ms.
            for &byte in b"GET / HTTP/1.1\r\nX-Pad: ".iter().cycle() {
                if s.write_all(&[byte]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };
        let cut = tokio::time::timeout(Duration::from_secs(30), drip).await;
        assert_eq!(cut, Ok(true), "the server closed the dripping connection");
        assert_eq!(limits.timed_out.load(Ordering::Relaxed), 1);
    }
}
