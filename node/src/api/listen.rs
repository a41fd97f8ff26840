//! Where the agent listens, as `dockerd -H`: unix sockets (mode 0660) and TCP addresses, every
//! one serving the same router. TCP is mutual TLS (rustls, ring): a client must present a
//! certificate signed by the configured CA (`--tlsverify`). Only a loopback address may go
//! without it, because whoever reaches the agent can run containers as root on this machine.
//! Also the client's half of the same: a host string → a connected stream, TLS included.
//!
//! This module owns sockets and handshakes; it never looks at a request.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream, UnixListener};

/// How long a TLS handshake may take before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes under way at once on one TCP listener; more connections are dropped.
const MAX_HANDSHAKES: usize = 256;

/// What to pass, said once for every message that refuses a TCP host without TLS.
const TLS_FLAGS: &str = "--tlsverify --tlscacert ca.pem --tlscert server-cert.pem --tlskey \
                         server-key.pem (node.tls_verify, node.tls_ca, node.tls_cert, node.tls_key)";

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "invalid host {host:?}: {reason}; expected unix:///path/to/node.sock or tcp://IP:PORT"
    )]
    Host { host: String, reason: &'static str },
    #[error(
        "refusing to serve the node agent on {host} without TLS: whoever reaches it can run \
         containers as root on this machine; pass {TLS_FLAGS}, or listen on a loopback address \
         (127.0.0.1, ::1)"
    )]
    NeedsTls { host: String },
    #[error("TLS {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS {what} {path}: no certificate in it")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("TLS {what} {path}: {source}")]
    Rustls {
        what: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS client verification with CA {path}: {source}")]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("node agent socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listening on {host}: {source}")]
    Bind {
        host: String,
        source: std::io::Error,
    },
}

/// One `-H` value: a unix socket or a TCP address (a name or an IP on the client's side; the
/// agent listens on IPs only, so that "loopback" means what it says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl Host {
    /// `unix:///path`, `tcp://HOST:PORT` or `tcp://[IPv6]:PORT`.
    pub fn parse(s: &str) -> Result<Host, ListenError> {
        let bad = |reason| ListenError::Host {
            host: s.to_string(),
            reason,
        };
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad("a unix socket needs an absolute path"));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("tcp://") else {
            return Err(bad("unknown scheme"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or(bad("no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or(bad("unclosed ["))?,
            None if host.contains(':') => return Err(bad("an IPv6 address goes in brackets")),
            None => host,
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("no host"));
        }
        Ok(Host::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// The address a TCP host listens on: an IP, not a name.
    fn socket_addr(&self) -> Option<Result<SocketAddr, ListenError>> {
        let Host::Tcp { host, port } = self else {
            return None;
        };
        Some(
            host.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, *port))
                .map_err(|_| ListenError::Host {
                    host: self.to_string(),
                    reason:
                        "the agent listens on an IP address (0.0.0.0, 127.0.0.1, ::), not a name",
                }),
        )
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{}", p.display()),
            Host::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Host::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// The three PEM files of mutual TLS, for either side: `ca` signs the peer's certificate,
/// `cert` and `key` are this side's.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// docker's layout of a client's files: `DIR/ca.pem`, `DIR/cert.pem`, `DIR/key.pem`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, ListenError> {
        let pem = |source| ListenError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(pem)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem)?;
        if certs.is_empty() {
            return Err(ListenError::NoCertificate {
                what,
                path: path.to_path_buf(),
            });
        }
        Ok(certs)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, ListenError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in Self::certs(&self.ca, "CA")? {
            roots.add(c).map_err(|source| ListenError::Rustls {
                what: "CA",
                path: self.ca.clone(),
                source,
            })?;
        }
        Ok(roots)
    }

    /// This side's chain and key.
    fn identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ListenError> {
        let certs = Self::certs(&self.cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|source| ListenError::Pem {
            what: "key",
            path: self.key.clone(),
            source,
        })?;
        Ok((certs, key))
    }

    fn rustls_err(&self, source: rustls::Error) -> ListenError {
        ListenError::Rustls {
            what: "certificate",
            path: self.cert.clone(),
            source,
        }
    }

    /// The agent's side: its certificate, and clients verified against the CA.
    fn server_config(&self) -> Result<rustls::ServerConfig, ListenError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()
        .map_err(|source| ListenError::Verifier {
            path: self.ca.clone(),
            source,
        })?;
        let (certs, key) = self.identity()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.rustls_err(e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| self.rustls_err(e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The client's side: the agent verified against the CA, our certificate shown.
    fn client_config(&self) -> Result<rustls::ClientConfig, ListenError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = self.roots()?;
        let (certs, key) = self.identity()?;
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.rustls_err(e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| self.rustls_err(e))
    }
}

/// Whether `ip` is on this machine only (127.0.0.0/8, ::1, and IPv4-mapped loopback).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Where the agent will listen, checked: hosts parsed, the loopback rule applied, TLS loaded.
/// Nothing is bound yet (see [`Listen::bind`]).
pub struct Listen {
    unix: Vec<PathBuf>,
    tcp: Vec<SocketAddr>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listen {
    /// `hosts` as `-H` takes them; `tls` (`--tlsverify` and its three files) serves every TCP
    /// host with mutual TLS. A TCP host other than loopback without `tls` is refused.
    pub fn new(hosts: &[String], tls: Option<&TlsFiles>) -> Result<Listen, ListenError> {
        let mut listen = Listen {
            unix: Vec::new(),
            tcp: Vec::new(),
            tls: None,
        };
        for h in hosts {
            let host = Host::parse(h)?;
            match host.socket_addr() {
                None => {
                    if let Host::Unix(p) = host {
                        listen.unix.push(p);
                    }
                }
                Some(addr) => {
                    let addr = addr?;
                    if tls.is_none() && !is_loopback(addr.ip()) {
                        return Err(ListenError::NeedsTls {
                            host: host.to_string(),
                        });
                    }
                    listen.tcp.push(addr);
                }
            }
        }
        if let Some(files) = tls {
            listen.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                files.server_config()?,
            )));
        }
        Ok(listen)
    }

    /// Binds every host: TCP first (nothing to undo when a port is taken), then the sockets
    /// (a stale file left by a killed agent is replaced; one somebody answers on is not).
    pub(crate) async fn bind(&self) -> Result<Vec<Bound>, ListenError> {
        let mut bound = Vec::new();
        for addr in &self.tcp {
            let tcp = TcpListener::bind(addr)
                .await
                .map_err(|source| ListenError::Bind {
                    host: format!("tcp://{addr}"),
                    source,
                })?;
            // The address as bound: a test may ask for port 0.
            let addr = tcp.local_addr().unwrap_or(*addr);
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            tracing::info!("node agent listening on tcp://{addr} ({scheme})");
            bound.push(match &self.tls {
                Some(acceptor) => Bound::Tls(TlsListener {
                    tcp,
                    acceptor: acceptor.clone(),
                    handshakes: tokio::task::JoinSet::new(),
                }),
                None => Bound::Tcp(tcp),
            });
        }
        for path in &self.unix {
            let (listener, file) = bind_unix(path)?;
            tracing::info!("node agent listening on unix://{}", path.display());
            bound.push(Bound::Unix(listener, file));
        }
        Ok(bound)
    }
}

fn bind_unix(socket: &Path) -> Result<(UnixListener, SocketFile), ListenError> {
    let sock_err = |source| ListenError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    // A socket file left by a killed agent is stale only if nobody answers on it.
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(sock_err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another agent is serving it",
            )));
        }
        std::fs::remove_file(socket).map_err(sock_err)?;
    }
    let listener = UnixListener::bind(socket).map_err(sock_err)?;
    let file = SocketFile(socket.to_path_buf());
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
            .map_err(sock_err)?;
    }
    Ok((listener, file))
}

/// A socket file this agent made, removed when the agent stops listening on it.
pub(crate) struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A bound listener, ready to serve.
pub(crate) enum Bound {
    Unix(UnixListener, SocketFile),
    Tcp(TcpListener),
    Tls(TlsListener),
}

/// Serves `app` on every listener until `shutdown` resolves (then each finishes its in-flight
/// requests, as `axum::serve` does). The first listener to fail stops the others.
pub(crate) async fn serve_all(
    bound: Vec<Bound>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for b in bound {
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|v| *v).await;
        };
        match b {
            Bound::Unix(l, file) => servers.spawn(async move {
                let r = axum::serve(l, app).with_graceful_shutdown(stopped).await;
                drop(file);
                r
            }),
            Bound::Tcp(l) => servers
                .spawn(async move { axum::serve(l, app).with_graceful_shutdown(stopped).await }),
            Bound::Tls(l) => servers
                .spawn(async move { axum::serve(l, app).with_graceful_shutdown(stopped).await }),
        };
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopping = false;
    let mut result = Ok(());
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                stopping = true;
                let _ = stop_tx.send(true);
            }
            done = servers.join_next() => {
                let r = match done {
                    None => break,
                    Some(Ok(r)) => r,
                    Some(Err(e)) => Err(std::io::Error::other(e)),
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "a listener failed; stopping the others");
                    if result.is_ok() {
                        result = Err(e);
                    }
                    let _ = stop_tx.send(true);
                }
            }
        }
    }
    result
}

/// A connection whose TLS handshake succeeded, and its peer.
type Handshaken = (tokio_rustls::server::TlsStream<TcpStream>, SocketAddr);

/// TCP with mutual TLS for `axum::serve`: handshakes run beside the accept loop (a client that
/// stalls its handshake holds only its own connection, and for at most [`HANDSHAKE_TIMEOUT`]);
/// connections whose handshake fails (no certificate, an unknown CA) never reach the router.
pub(crate) struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: tokio::task::JoinSet<Option<Box<Handshaken>>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        enum Event {
            Accepted(std::io::Result<(TcpStream, SocketAddr)>),
            Handshake(Option<Box<Handshaken>>),
        }
        loop {
            // Both branches are cancel-safe: axum drops this future at shutdown.
            let event = tokio::select! {
                r = self.tcp.accept() => Event::Accepted(r),
                Some(done) = self.handshakes.join_next() => Event::Handshake(done.ok().flatten()),
            };
            match event {
                Event::Accepted(Ok((stream, peer))) => {
                    if self.handshakes.len() >= MAX_HANDSHAKES {
                        tracing::warn!(%peer, "too many TLS handshakes at once; dropped");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(s)) => Some(Box::new((s, peer))),
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "TLS handshake refused");
                                None
                            }
                            Err(_) => {
                                tracing::info!(%peer, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Event::Accepted(Err(e)) => {
                    // EMFILE and friends: let connections finish instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Event::Handshake(Some(done)) => return *done,
                Event::Handshake(None) => {}
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A byte stream to the agent, whatever carries it.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The client's way to the agent, set up once: a socket path, or an address (with TLS).
#[derive(Clone)]
pub(crate) enum Dial {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
        tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    },
}

impl Dial {
    /// `host` as `-H` takes it (a bare path is a socket); `tls` verifies the agent against the
    /// CA and shows our certificate.
    pub(crate) fn new(host: &str, tls: Option<&TlsFiles>) -> Result<Dial, ListenError> {
        let host = if host.contains("://") {
            Host::parse(host)?
        } else {
            Host::Unix(PathBuf::from(host))
        };
        Ok(match host {
            Host::Unix(p) => Dial::Unix(p),
            Host::Tcp { host, port } => {
                let tls = match tls {
                    None => None,
                    Some(files) => {
                        let name =
                            ServerName::try_from(host.clone()).map_err(|_| ListenError::Host {
                                host: host.clone(),
                                reason: "not a name TLS can verify",
                            })?;
                        let config = Arc::new(files.client_config()?);
                        Some((tokio_rustls::TlsConnector::from(config), name))
                    }
                };
                Dial::Tcp { host, port, tls }
            }
        })
    }

    /// The agent's address, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Dial::Unix(p) => p.display().to_string(),
            Dial::Tcp { host, port, tls } => {
                let h = Host::Tcp {
                    host: host.clone(),
                    port: *port,
                };
                if tls.is_some() {
                    format!("{h} (TLS)")
                } else {
                    h.to_string()
                }
            }
        }
    }

    pub(crate) async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        match self {
            Dial::Unix(p) => Ok(Box::new(tokio::net::UnixStream::connect(p).await?)),
            Dial::Tcp { host, port, tls } => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                let _ = stream.set_nodelay(true);
                match tls {
                    None => Ok(Box::new(stream)),
                    Some((connector, name)) => {
                        Ok(Box::new(connector.connect(name.clone(), stream).await?))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Result<&str, &str>) {
        match (Host::parse(input), expected) {
            (Ok(h), Ok(shown)) => assert_eq!(h.to_string(), shown, "{input}"),
            (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{input}: {e}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn hosts_parse_as_docker_writes_them() {
        check("unix:///run/reg/node.sock", Ok("unix:///run/reg/node.sock"));
        check("tcp://0.0.0.0:2376", Ok("tcp://0.0.0.0:2376"));
        check("tcp://127.0.0.1:2375/", Ok("tcp://127.0.0.1:2375"));
        check("tcp://[::1]:2376", Ok("tcp://[::1]:2376"));
        check("tcp://node1.example:2376", Ok("tcp://node1.example:2376"));
        check("unix://node.sock", Err("absolute path"));
        check("tcp://0.0.0.0", Err("no port"));
        check("tcp://::1:2376", Err("brackets"));
        check("tcp://:2376", Err("no host"));
        check("tcp://x:port", Err("not a number"));
        check("ssh://node1", Err("unknown scheme"));
        check("/run/reg/node.sock", Err("unknown scheme"));
    }

    #[test]
    fn tcp_without_tls_is_refused_unless_loopback() {
        let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for ok in [
            "tcp://127.0.0.1:2375",
            "tcp://127.1.2.3:2375",
            "tcp://[::1]:2375",
        ] {
            assert!(Listen::new(&hosts(&[ok]), None).is_ok(), "{ok}");
        }
        for refused in [
            "tcp://0.0.0.0:2375",
            "tcp://[::]:2375",
            "tcp://10.0.0.1:2375",
        ] {
            let err = Listen::new(&hosts(&["unix:///tmp/x.sock", refused]), None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("--tlsverify --tlscacert"), "{refused}: {err}");
        }
        let err = Listen::new(&hosts(&["tcp://localhost:2375"]), None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("IP address"), "{err}");
        assert!(is_loopback("::ffff:127.0.0.1".parse().expect("ip")));
    }
}
