//! One client connection: the TLS handshake under a timeout, then HTTP/1.1 (with websocket
//! upgrades) until the client leaves or the gateway drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;

use crate::proxy::read_ahead::ReadAhead;
use crate::router;
use crate::state::{Connection, Gateway};

pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    permit: OwnedSemaphorePermit,
) {
    let handshake_timeout = gateway.timeouts.tls_handshake;
    let tls =
        match tokio::time::timeout(handshake_timeout, acceptor.accept(ReadAhead::new(tcp))).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
    let connection = Connection {
        peer,
        permit: Arc::new(permit),
    };
    let stopping = gateway.tasks.stopping().clone();
    let aborting = gateway.tasks.aborting().clone();
    let header_timeout = gateway.timeouts.request_headers;
    let service = service_fn(move |request| {
        let gateway = gateway.clone();
        let connection = connection.clone();
        async move { Ok::<_, Infallible>(router::handle(gateway, connection, request).await) }
    });
    let http = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(http);
    let result = tokio::select! {
        result = http.as_mut() => result,
        () = stopping.cancelled() => {
            // Finish the request in progress, then close instead of waiting for another.
            http.as_mut().graceful_shutdown();
            tokio::select! {
                result = http.as_mut() => result,
                () = aborting.cancelled() => return,
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}
