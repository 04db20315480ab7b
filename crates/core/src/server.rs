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

/// Binds `endpoint` (`host:port`; a host name is resolved).
pub async fn bind(endpoint: &str) -> Result<TcpListener, ComponentError> {
    TcpListener::bind(endpoint)
        .await
        .map_err(|source| ComponentError::Io {
            context: format!("binding {endpoint}"),
            source,
        })
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
