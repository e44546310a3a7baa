//! The HTTP listener, with the limits a long-running service needs against slow,
//! idle and too many clients.
//!
//! `axum::serve` has no header-read timeout, no idle timeout and no connection cap: a
//! client that opens connections and sends nothing (or half a request) holds them open
//! for as long as it likes. Here each connection must send its first byte, and then each
//! request's head, within the header-read timeout (hyper's timer also runs while it waits
//! for a keep-alive connection's next request, so idle connections close too), every request has a deadline (slow bodies
//! included), and at most `max_connections` are open at once; further clients wait in
//! the kernel's accept queue instead of costing memory.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

/// How long and how many clients may hold salve's port.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A client must send a request's head within this; also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// A whole request (body included) and its answer must finish within this.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a stop waits for requests in flight before it closes their connections.
    pub drain: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            drain: Duration::from_secs(5),
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish
/// (at most `limits.drain`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    // HTTP/1.1 only (Alertmanager, Prometheus, browsers and kubelet probes all speak it):
    // detecting HTTP/2 would first read a preface with no timeout at all, which is exactly
    // the hold a silent client must not get.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "cannot accept a connection; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |mut request: http::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.header_read_timeout;
        tokio::spawn(async move {
            // hyper starts its header timer only once a request has begun; a client that
            // connects and never sends a byte is closed here instead.
            // (`readable()` is no test: tokio may report a new socket ready with nothing
            // to read; `peek` waits for a byte, or the end of the stream.)
            let mut byte = [0u8; 1];
            if tokio::time::timeout(first_byte, stream.peek(&mut byte))
                .await
                .is_err()
            {
                debug!(%peer, "closing a connection that sent nothing");
                return;
            }
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(connection).await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            "requests still in flight after {:?}; closing their connections",
            limits.drain
        );
    }
    Ok(())
}
