//! gRPC connections that close when idle: `keepalive.server_parameters.
//! max_connection_idle` with Go's meaning (idle since the last call on the
//! connection finished, or since it was opened). tonic has no such setting;
//! a connection that stays idle past it ends as if the client had closed
//! it, which is safe because no call is in flight on it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TlsConnectInfo};

/// Calls in flight on one connection, and since when it has had none.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds after `origin` when the last call finished.
    idle_since_ms: AtomicU64,
    origin: Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Marks a call as started; the guard marks it finished when dropped.
    pub(crate) fn call(self: &Arc<Self>) -> CallGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }

    /// When the connection becomes closable, or `None` while calls run.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.origin + since + idle)
    }
}

/// One call on a connection; dropping it (answer sent, or call cancelled)
/// starts the idle clock when it was the last.
pub(crate) struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What tonic puts in each request's extensions for our connections (in
/// place of its `TcpConnectInfo`).
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub remote_addr: Option<SocketAddr>,
    pub activity: Arc<Activity>,
}

impl ConnInfo {
    /// The connection info of a request, over plain TCP or TLS.
    pub(crate) fn of(extensions: &http::Extensions) -> Option<&ConnInfo> {
        extensions.get::<ConnInfo>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<ConnInfo>>()
                .map(|t| t.get_ref())
        })
    }
}

/// A TCP stream that reads as closed once idle past `idle` (never when
/// `idle` is zero).
pub(crate) struct IdleClosing {
    stream: TcpStream,
    info: ConnInfo,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl IdleClosing {
    pub(crate) fn new(stream: TcpStream, idle: Duration) -> Self {
        let info = ConnInfo {
            remote_addr: stream.peer_addr().ok(),
            activity: Arc::new(Activity::new()),
        };
        let first = Instant::now() + idle;
        Self {
            stream,
            info,
            idle,
            timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// True when the connection has been idle past the limit; otherwise
    /// the timer is armed for the next moment it could be.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.idle.is_zero() {
            return false;
        }
        loop {
            let next = self
                .info
                .activity
                .idle_deadline(self.idle)
                .unwrap_or_else(|| Instant::now() + self.idle);
            if next <= Instant::now() {
                return true;
            }
            if self.timer.deadline() != next {
                self.timer.as_mut().reset(next);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl Connected for IdleClosing {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for IdleClosing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.idle_expired(cx) {
            // End of stream: the server closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for IdleClosing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
