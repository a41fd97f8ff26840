//! The accept loop and the connection-level bounds that keep the server up under hostile
//! clients: at most `max_connections` served at once (more wait in the kernel's accept queue),
//! a header-read timeout that also closes idle keep-alive connections, a TLS handshake bounded
//! by the same time, a request body that must keep a minimum rate ([`Paced`]), and graceful
//! shutdown with a grace period. HTTP/1.1 by hyper; TLS by rustls (ring).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use futures::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};

/// Errors of the accept loop and its TLS set-up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "TLS certificate {cert} / key {key}: {source}; both must be PEM files readable by reg"
    )]
    Tls {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Connection bounds, from `registry.limits`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// TLS from a PEM certificate chain and key (rustls with the ring provider).
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, ListenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = |source: std::io::Error| ListenError::Tls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    let pem = |e: rustls::pki_types::pem::Error| err(std::io::Error::other(e.to_string()));
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(std::io::Error::other(e)))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` resolves; in-flight requests then get `grace`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    bounds: Bounds,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ListenError> {
    let slots = Arc::new(tokio::sync::Semaphore::new(bounds.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A free slot first: at the bound, new clients wait in the accept queue.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: let connections finish instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let (tls, app, stop) = (tls.clone(), app.clone(), stop_rx.clone());
        connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(TokioIo::new(stream), peer, app, bounds, stop).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(bounds.header_timeout, acceptor.accept(stream)).await;
                    if let Ok(Ok(s)) = handshake {
                        connection(TokioIo::new(s), peer, app, bounds, stop).await;
                    }
                }
            }
        });
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, finishing in-flight requests"
    );
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over, dropping remaining connections");
        connections.abort_all();
    }
    Ok(())
}

/// One HTTP/1.1 connection: requests carry the peer's address (axum's `ConnectInfo`).
async fn connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    bounds: Bounds,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req.map(Body::new)).await }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        }
        () = async { let _ = stop.wait_for(|v| *v).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A request body that must bring at least `min_per_sec` bytes a second on average over each
/// window of `window`: a client that trickles (or announces 10 GB and sends 3 bytes) is cut
/// off with an error the handler reports, instead of holding its connection and session.
pub(crate) struct Paced<S> {
    inner: S,
    window: Duration,
    needed: u64,
    got: u64,
    tick: Pin<Box<tokio::time::Sleep>>,
    failed: bool,
}

impl<S> Paced<S> {
    pub(crate) fn new(inner: S, window: Duration, min_per_sec: u64) -> Paced<S> {
        Paced {
            inner,
            window,
            needed: min_per_sec.saturating_mul(window.as_secs().max(1)),
            got: 0,
            tick: Box::pin(tokio::time::sleep(window)),
            failed: false,
        }
    }

    /// At a window's end: enough bytes, or the body is too slow.
    fn roll(&mut self) -> Result<(), std::io::Error> {
        if self.got < self.needed {
            self.failed = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the request body brought {} bytes in {} s, below the minimum of {} \
                     (registry.limits.min_body_bytes_per_sec)",
                    self.got,
                    self.window.as_secs(),
                    self.needed
                ),
            ));
        }
        self.got = 0;
        let next = tokio::time::Instant::now() + self.window;
        self.tick.as_mut().reset(next);
        Ok(())
    }
}

impl<S, E> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.got = self.got.saturating_add(b.len() as u64);
                if self.tick.is_elapsed() {
                    if let Err(e) = self.roll() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Nothing yet: is the window over?
                while self.tick.as_mut().poll(cx).is_ready() {
                    if let Err(e) = self.roll() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunks(
        items: Vec<(u64, usize)>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        Box::pin(
            futures::stream::iter(items).then(|(wait_ms, n)| async move {
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                Ok(Bytes::from(vec![0u8; n]))
            }),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_cut_at_the_end_of_a_window() {
        // 10 bytes every 5 s against a minimum of 100 bytes/s over 10 s windows.
        let mut p = Paced::new(chunks(vec![(5000, 10); 10]), Duration::from_secs(10), 100);
        let mut got = 0;
        let err = loop {
            match p.next().await {
                Some(Ok(b)) => got += b.len(),
                Some(Err(e)) => break e,
                None => panic!("the slow body was not cut"),
            }
        };
        assert!(got <= 20, "{got}");
        assert!(err.to_string().contains("below the minimum"), "{err}");
        assert!(p.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_the_rate_passes_and_a_silent_one_does_not() {
        let fast = Paced::new(chunks(vec![(1000, 2000); 30]), Duration::from_secs(10), 100);
        let all: Vec<_> = fast.collect().await;
        assert_eq!(all.len(), 30);
        assert!(all.iter().all(Result::is_ok));
        // Announces data and sends nothing at all.
        let silent = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let mut p = Paced::new(silent, Duration::from_secs(10), 1);
        let r = p.next().await;
        assert!(matches!(r, Some(Err(_))), "{r:?}");
    }
}
