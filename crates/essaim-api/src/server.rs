//! The HTTP server around the router, with the limits a node exposed to a
//! network needs: at most [`MAX_CONNECTIONS`] connections at once (more
//! wait in the kernel's backlog), request heads of at most
//! [`MAX_HEADER_BYTES`] (431 beyond) read within [`HEADER_TIMEOUT`] (a
//! client that trickles them is dropped), HTTP/1.1 only, and a kernel send
//! buffer of [`SEND_BUFFER`] per connection: a client that stops reading
//! (an event stream left open) holds that much, and then the events meant
//! for it are dropped (it is told: `lagged`), never queued without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::Service;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 128;
/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The kernel's send buffer of each connection.
pub const SEND_BUFFER: usize = 128 * 1024;
/// Time allowed to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut make = router.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut stop) => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        let Ok(svc) = make.call(peer).await;
        let svc = TowerToHyperService::new(svc);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_header_size(MAX_HEADER_BYTES)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "API connection: {e}");
                    }
                }
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
