//! The admin listener's connections, bounded so that slow or idle clients cannot take the file
//! descriptors the analyzers need:
//!
//! - at most `max_connections` open at once; a connection beyond the cap closes the
//!   longest-waiting idle one (no request in progress) to make room, or is refused with 503
//!   when every one is busy answering; both are counted on
//!   `custodian_admin_connections_refused_total`;
//! - a request head must arrive within `header_timeout` (from the connection's start, or from
//!   the first byte after a keep-alive pause);
//! - a keep-alive connection without a request, or a connection that moves no byte, is closed
//!   after `idle_timeout`.
//!
//! With TLS (`[admin.tls]`) the handshake must also finish within `header_timeout`.
//!
//! Each connection is served by hyper's HTTP/1 connection builder. hyper's own
//! `header_read_timeout` is not used: its timer also runs while a keep-alive connection waits
//! for its next request, which would make the idle timeout the header timeout.

use axum::Router;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The admin listener's connection limits (`[admin]` `max_connections`,
/// `header_timeout_secs`, `idle_timeout_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Keep-alive: the last answer is sent, nothing of the next request received.
    Idle,
    /// A request is being answered.
    Busy,
}

#[derive(Debug)]
struct ConnState {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// The last byte read or written.
    last_io: Instant,
    in_flight: usize,
}

/// One open connection, shared by its task, its I/O, its requests and the registry.
#[derive(Debug)]
struct Conn {
    state: Mutex<ConnState>,
    /// Cancelled when the connection is closed to make room for a new one.
    evict: CancellationToken,
    /// Wakes the deadline watcher when the phase changes.
    changed: tokio::sync::Notify,
}

impl Conn {
    fn new(now: Instant) -> Conn {
        Conn {
            state: Mutex::new(ConnState {
                phase: Phase::Head,
                since: now,
                last_io: now,
                in_flight: 0,
            }),
            evict: CancellationToken::new(),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ConnState) -> R) -> R {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn read_bytes(&self) {
        let now = Instant::now();
        let woke = self.with(|s| {
            s.last_io = now;
            if s.phase == Phase::Idle {
                s.phase = Phase::Head;
                s.since = now;
                true
            } else {
                false
            }
        });
        if woke {
            self.changed.notify_one();
        }
    }

    fn wrote_bytes(&self) {
        let now = Instant::now();
        self.with(|s| s.last_io = now);
    }

    fn request_started(&self) {
        let now = Instant::now();
        self.with(|s| {
            s.in_flight += 1;
            s.phase = Phase::Busy;
            s.since = now;
            s.last_io = now;
        });
        self.changed.notify_one();
    }

    fn request_finished(&self) {
        let now = Instant::now();
        self.with(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.phase = Phase::Idle;
                s.since = now;
            }
        });
        self.changed.notify_one();
    }

    /// Idle or still waiting for a head: may be closed to make room. Returns since when.
    fn evictable(&self) -> Option<Instant> {
        self.with(|s| (s.phase != Phase::Busy).then_some(s.since))
    }

    /// When the connection is to be closed if nothing changes.
    fn deadline(&self, limits: &Limits) -> (Instant, &'static str) {
        self.with(|s| match s.phase {
            Phase::Head => (s.since + limits.header_timeout, "header"),
            Phase::Idle => (s.since + limits.idle_timeout, "idle"),
            Phase::Busy => (s.last_io + limits.idle_timeout, "stalled"),
        })
    }

    /// Resolves when the connection's deadline has passed, with which timeout it was.
    async fn expired(&self, limits: Limits) -> &'static str {
        loop {
            let (at, why) = self.deadline(&limits);
            if Instant::now() >= at {
                return why;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// Marks a request finished when dropped (with the response body, once it is sent).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The TCP stream, noting every byte read and written.
struct Watched {
    inner: tokio::net::TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_bytes();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.wrote_bytes();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.wrote_bytes();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The open connections by id.
type Registry = Arc<Mutex<HashMap<u64, Arc<Conn>>>>;

/// Makes room for one more connection: `true` if it may be served.
fn admit(registry: &Registry, limits: &Limits) -> bool {
    let mut open = registry.lock().unwrap_or_else(|p| p.into_inner());
    if open.len() < limits.max_connections {
        return true;
    }
    let oldest = open
        .iter()
        .filter_map(|(id, c)| c.evictable().map(|since| (since, *id)))
        .min();
    match oldest {
        Some((_, id)) => {
            if let Some(c) = open.remove(&id) {
                c.evict.cancel();
            }
            crate::core::telemetry::emit(super::events::ConnectionOverCap {
                reason: "idle_closed",
            });
            true
        }
        None => {
            crate::core::telemetry::emit(super::events::ConnectionOverCap { reason: "busy" });
            false
        }
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 31\r\nRetry-After: 1\r\n\r\ntoo many admin connections now\n";

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets the
/// requests in progress finish (idle connections are closed at once) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let registry: Registry = Arc::new(Mutex::new(HashMap::new()));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut next_id = 0u64;
    let mut warned_accept = false;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE and the like: wait for descriptors to come back.
                    if !warned_accept {
                        tracing::warn!(component = "admin", error = %e, "admin accept failed; retrying");
                        warned_accept = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        warned_accept = false;
        if !admit(&registry, &limits) {
            // Every slot is answering a request: say so and close, without waiting on the peer.
            let _ = stream.try_write(BUSY);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn::new(Instant::now()));
        registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, conn.clone());
        let service = service.clone();
        let stop = stop.clone();
        let registry = registry.clone();
        let acceptor = acceptor.clone();
        tracker.spawn(async move {
            let watched = Watched {
                inner: stream,
                conn: conn.clone(),
            };
            match acceptor {
                None => serve_connection(watched, peer, conn, service, limits, stop).await,
                Some(a) => {
                    let handshake = tokio::select! {
                        r = tokio::time::timeout(limits.header_timeout, a.accept(watched)) => r,
                        _ = conn.evict.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, conn, service, limits, stop).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(component = "admin", error = %e, "admin TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(component = "admin", "admin TLS handshake timed out")
                        }
                    }
                }
            }
            registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    conn: Arc<Conn>,
    service: hyper_util::service::TowerToHyperService<Router>,
    limits: Limits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let for_requests = conn.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        for_requests.request_started();
        let guard = InFlight(for_requests.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let fut = hyper::service::Service::call(&service, req);
        async move {
            let resp = fut.await?;
            Ok::<_, std::convert::Infallible>(resp.map(move |body| {
                axum::body::Body::new(body.map_frame(move |f| {
                    let _ = &guard;
                    f
                }))
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).keep_alive(true);
    let served = builder.serve_connection(io, svc);
    tokio::pin!(served);
    let expired = conn.expired(limits);
    tokio::pin!(expired);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(component = "admin", error = %e, "admin connection ended with an error");
                }
                return;
            }
            _ = conn.evict.cancelled() => return,
            why = &mut expired => {
                tracing::debug!(component = "admin", timeout = why, "admin connection closed on timeout");
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}
