//! The MLLP listener of one analyzer: accepts connections (plain or TLS, with a required client
//! certificate when configured), caps how many are open, reads one frame at a time with a read
//! timeout, and answers each frame with what the handler returns — only after the handler has
//! settled it (stored durably, or refused).
//!
//! A connection that breaks mid-frame loses nothing that was acknowledged: a frame is handed on
//! only when complete, and its ACK is written only after the handler returned.

use crate::codec::mllp::{MllpCodec, MllpError};
use crate::core::telemetry::emit;
use crate::ingest::events::{
    BytesDiscarded, ConnectionChanged, ConnectionRefusedAtCap, ListenerStarted, TlsRefused,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The peer a frame came from.
#[derive(Debug, Clone)]
pub struct Peer {
    pub analyzer: Arc<str>,
    pub addr: SocketAddr,
    /// The connection's sequence number (for correlating log lines).
    pub connection: u64,
}

/// Settles frames: returns the reply to write (an ACK), or `None` to write nothing.
pub trait FrameHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        peer: &'a Peer,
        frame: Bytes,
    ) -> Pin<Box<dyn Future<Output = Option<Bytes>> + Send + 'a>>;

    /// A frame that could not be read whole (too large, broken framing, cut off).
    fn framing_error(&self, peer: &Peer, error: MllpError);
}

/// How one listener behaves.
#[derive(Clone)]
pub struct ListenerSettings {
    pub analyzer: Arc<str>,
    pub max_frame_bytes: usize,
    /// A connection that sends nothing for this long is closed.
    pub read_timeout: Duration,
    pub max_connections: usize,
    /// TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Accepts connections until `shutdown` is cancelled; then stops accepting and lets every open
/// connection finish the frame it is settling. Returns when all connections are closed.
pub async fn serve<H: FrameHandler>(
    listener: TcpListener,
    settings: ListenerSettings,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let tracker = tokio_util::task::TaskTracker::new();
    let acceptor = settings.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut seq: u64 = 0;
    let analyzer = settings.analyzer.clone();
    emit(ListenerStarted {
        analyzer: &analyzer,
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(component = "mllp", analyzer = %analyzer, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        seq += 1;
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            emit(ConnectionRefusedAtCap {
                analyzer: &analyzer,
                connection: seq,
            });
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            analyzer: analyzer.clone(),
            addr,
            connection: seq,
        };
        let handler = handler.clone();
        let settings = settings.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            emit(ConnectionChanged {
                analyzer: &peer.analyzer,
                connection: peer.connection,
                open: true,
            });
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection(tls, &peer, &settings, &*handler, &shutdown).await,
                        Ok(Err(e)) => {
                            emit(TlsRefused {
                                analyzer: &peer.analyzer,
                                connection: peer.connection,
                                error: &e.to_string(),
                            });
                        }
                        Err(_) => {
                            warn!(component = "mllp", analyzer = %peer.analyzer, connection = peer.connection, "TLS handshake timed out");
                        }
                    }
                }
                None => connection(stream, &peer, &settings, &*handler, &shutdown).await,
            }
            emit(ConnectionChanged {
                analyzer: &peer.analyzer,
                connection: peer.connection,
                open: false,
            });
            debug!(component = "mllp", analyzer = %peer.analyzer, connection = peer.connection, "connection closed");
        });
    }
    info!(component = "mllp", analyzer = %analyzer, "listener stopped accepting; finishing open connections");
    tracker.close();
    tracker.wait().await;
}

async fn connection<S, H>(
    stream: S,
    peer: &Peer,
    settings: &ListenerSettings,
    handler: &H,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    H: FrameHandler + ?Sized,
{
    let mut framed = Framed::new(stream, MllpCodec::new(settings.max_frame_bytes));
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(settings.read_timeout, framed.next()) => r,
        };
        let frame = match next {
            Err(_) => {
                debug!(component = "mllp", analyzer = %peer.analyzer, connection = peer.connection, "read timeout; closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                handler.framing_error(peer, e);
                // After a framing error the stream cannot be trusted to be in step: close it.
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let discarded = framed.codec_mut().take_discarded_bytes();
        if discarded > 0 {
            emit(BytesDiscarded {
                analyzer: &peer.analyzer,
                bytes: discarded,
            });
        }
        // The frame is settled even if shutdown is requested meanwhile: its ACK must go out.
        if let Some(reply) = handler.handle(peer, frame).await
            && let Err(e) = framed.send(reply).await
        {
            warn!(component = "mllp", analyzer = %peer.analyzer, connection = peer.connection, error = %e, "could not write the acknowledgement");
            break;
        }
    }
    let _ = futures_util::SinkExt::<Bytes>::close(&mut framed).await;
}
