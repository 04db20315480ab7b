//! A small HTTP/1.1 + HTTP/2 server with graceful shutdown, shared by the
//! components that listen (OTLP/HTTP, health, self-metrics).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::component::ComponentError;

/// The response type of [`serve`] handlers.
pub type HttpResponse = Response<Full<Bytes>>;

/// Connection-level limits.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How long a client may take to send the request headers (slowloris guard).
    pub read_header_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing them.
    pub drain_timeout: Duration,
    /// Serve HTTPS with this config (see [`crate::tls::TlsSettings`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Keep HTTP/1.1 connections open between requests (`false`: each
    /// response carries `connection: close` and the connection ends).
    pub keep_alive: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            read_header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            tls: None,
            keep_alive: true,
        }
    }
}

/// The listen backlog asked for: the kernel caps it at its own maximum
/// (`net.core.somaxconn`, 4096 on current Linux), as Go's listeners do.
/// tokio's default of 1024 overflowed when a thousand clients connected at
/// once (a fleet reconnecting after a restart): the dropped SYNs are
/// retried after a second, and those requests wait that long.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `endpoint` (`host:port`; a host name is resolved, and the first
/// of its addresses that binds is used) with `SO_REUSEADDR` and the
/// largest listen backlog the kernel allows.
pub async fn bind(endpoint: &str) -> Result<TcpListener, ComponentError> {
    let io = |source| ComponentError::Io {
        context: format!("binding {endpoint}"),
        source,
    };
    let mut last = None;
    for addr in tokio::net::lookup_host(endpoint).await.map_err(io)? {
        match listen(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(io(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    })))
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A running server; [`ServerHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout), then returns.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Serves `handler` on `listener` until shut down. The handler gets each
/// request with the peer address.
pub fn serve<F, Fut>(listener: TcpListener, options: ServerOptions, handler: F) -> ServerHandle
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(options.keep_alive)
            .header_read_timeout(options.read_header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req, peer).await) }
            });
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
            let handshake_timeout = options.read_header_timeout;
            tokio::spawn(async move {
                let result = match tls {
                    None => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(options.drain_timeout) => {
                tracing::warn!(%local_addr, "in-flight requests still open after the drain timeout; closing them");
            }
        }
    });
    ServerHandle {
        local_addr,
        stop,
        task: Mutex::new(Some(task)),
    }
}

/// A response with `status`, `content-type` and `body`.
pub fn response(
    status: http::StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's cap on listen backlogs, when it says.
    fn somaxconn() -> Option<usize> {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// 1,500 clients connecting at once to a listener that has not accepted
    /// yet all complete their handshake (tokio's default backlog of 1024
    /// drops the SYNs past it, and those clients wait a second or more).
    #[tokio::test]
    async fn a_thousand_and_a_half_clients_connecting_at_once_all_get_through() {
        let clients = 1500;
        if somaxconn().is_some_and(|m| m < clients) {
            eprintln!("skipped: net.core.somaxconn is below {clients} here");
            return;
        }
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..clients).map(|_| {
            tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
            })
        });
        let mut connected = vec![];
        for c in connects.collect::<Vec<_>>() {
            if let Ok(Ok(stream)) = c.await.unwrap() {
                connected.push(stream);
            }
        }
        assert_eq!(connected.len(), clients);
        drop(listener);
    }

    #[tokio::test]
    async fn a_host_name_resolves_and_a_taken_port_is_an_error_naming_it() {
        let listener = bind("localhost:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = format!("127.0.0.1:{port}");
        if listener.local_addr().unwrap().is_ipv4() {
            let err = bind(&taken).await.unwrap_err().to_string();
            assert!(err.contains(&format!("binding {taken}")), "{err}");
        }
    }
}
