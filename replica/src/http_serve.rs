//! Serving the HTTP router on its listener, plain or over TLS.
//!
//! Over TLS (HTTPS) each connection is handshaken with the configuration
//! in use when it arrives, so a rotated certificate serves the next
//! connection; the client certificate the handshake verified is put in
//! each of its requests' extensions ([`PeerCertificate`]) for the
//! authentication layer (`crate::http_auth`). HTTP/1.1 only: no ALPN is
//! offered.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::http_auth::PeerCertificate;
use crate::net::tls::Tls;

/// Longest a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTPS connections open at once at most; past it a new one is closed at
/// once.
pub const MAX_HTTPS_CONNECTIONS: usize = 1024;

/// Longest open HTTPS connections are given to finish their requests once
/// the server stops; what is left then is cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The pause after an error accepting a connection (running out of file
/// descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves; over TLS
/// (HTTPS) when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            serve_tls(
                listener,
                router,
                tls,
                shutdown,
                MAX_HTTPS_CONNECTIONS,
                SHUTDOWN_GRACE,
            )
            .await
        }
    }
}

async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Tls,
    shutdown: impl Future<Output = ()> + Send + 'static,
    max_connections: usize,
    grace: Duration,
) -> std::io::Result<()> {
    let stopping = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = finished {
                    if error.is_panic() {
                        tracing::error!(%error, "an HTTPS connection task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, max_connections, "too many HTTPS connections; closing a new one");
                        drop(tcp);
                        continue;
                    };
                    connections.spawn(connection(
                        tcp,
                        peer,
                        tls.clone(),
                        router.clone(),
                        stopping.clone(),
                        slot,
                    ));
                }
                Err(error) => {
                    if !matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(%error, "accepting an HTTPS connection");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                }
            }
        }
    }
    // No new connections; open ones finish what they are answering.
    drop(listener);
    stopping.cancel();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "HTTPS connections still open after the shutdown grace; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// One HTTPS connection: the handshake, then HTTP/1.1 until the client
/// closes, or the server stops (requests under way are answered first).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Tls,
    router: Router,
    stopping: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, %error, "setting TCP_NODELAY");
    }
    let handshake = tokio::select! {
        () = stopping.cancelled() => return,
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)) => handshake,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "HTTPS: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTPS: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    let certificate = PeerCertificate(stream.peer_certificate().cloned().map(Arc::new));
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(certificate.clone());
        hyper::service::Service::call(&router, request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "HTTPS connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::*;
    use crate::auth::Auth;
    use crate::certs::{Ca, Issued};
    use crate::engine::Engine;
    use crate::http::tests::FakeEngine;
    use crate::http::{router_with_limits, Limits};
    use crate::net::tls::TlsFiles;

    const WAIT: Duration = Duration::from_secs(10);

    /// A member's HTTPS server over a fake engine, with its CA and files.
    struct Server {
        _dir: tempfile::TempDir,
        ca: Ca,
        files: TlsFiles,
        tls: Tls,
        address: SocketAddr,
        engine: Arc<FakeEngine>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    fn server_names() -> Vec<String> {
        vec!["orders-0".into(), "127.0.0.1".into(), "localhost".into()]
    }

    fn write_member_files(files: &TlsFiles, issued: &Issued) {
        std::fs::write(&files.cert, &issued.cert_pem).unwrap();
        std::fs::write(&files.key, &issued.key_pem).unwrap();
    }

    impl Server {
        async fn start(engine: Arc<FakeEngine>) -> Server {
            let dir = tempfile::tempdir().unwrap();
            let (ca, _) = Ca::new("orders", 30).unwrap();
            let files = TlsFiles {
                cert: dir.path().join("tls.crt"),
                key: dir.path().join("tls.key"),
                ca: dir.path().join("ca.crt"),
            };
            std::fs::write(&files.ca, ca.cert_pem()).unwrap();
            write_member_files(&files, &ca.issue(&server_names(), 30).unwrap());
            let tls = Tls::load(files.clone()).unwrap();
            let auth = Auth::required(vec!["dledger-operator".into()], None, true).unwrap();
            let router = router_with_limits(
                engine.clone(),
                Limits {
                    auth,
                    serves_https: true,
                    ..Limits::default()
                },
            );
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, router, Some(tls.clone()), async {
                let _ = stopped.await;
            }));
            Server {
                _dir: dir,
                ca,
                files,
                tls,
                address,
                engine,
                stop: Some(stop),
                task,
            }
        }

        fn appended(&self) -> u64 {
            self.engine.status().last_index
        }

        fn client(&self, name: Option<&str>) -> Client {
            Client::new(
                self.ca.cert_pem(),
                name.map(|name| self.ca.issue(&[name.to_string()], 30).unwrap()),
            )
        }
    }

    /// A TLS client trusting a CA, with or without a certificate.
    struct Client(tokio_rustls::TlsConnector);

    impl Client {
        fn new(ca_pem: &str, certificate: Option<Issued>) -> Client {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
                .unwrap();
            let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
            let config = match certificate {
                None => builder.with_no_client_auth(),
                Some(issued) => builder
                    .with_client_auth_cert(
                        vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()],
                        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
                    )
                    .unwrap(),
            };
            Client(tokio_rustls::TlsConnector::from(Arc::new(config)))
        }

        async fn connect(
            &self,
            address: SocketAddr,
        ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
            let tcp = TcpStream::connect(address).await?;
            let name = ServerName::try_from("localhost").unwrap();
            self.0.connect(name, tcp).await
        }

        /// Sends one request (`Connection: close`) and reads the answer,
        /// or why there was none.
        async fn request(
            &self,
            address: SocketAddr,
            method: &str,
            path: &str,
            body: &[u8],
        ) -> std::io::Result<String> {
            let stream = self.connect(address).await?;
            exchange(stream, method, path, body).await
        }
    }

    async fn exchange(
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<String> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(WAIT, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                    // A close without close_notify after a whole answer.
                    Err(_) if !answer.is_empty() => return Ok(()),
                    Err(error) => return Err(error),
                }
            }
        })
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))?;
        read?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    fn status_of(answer: &str) -> &str {
        answer.get(9..12).unwrap_or("")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_requests_are_authorized_by_their_client_certificates() {
        let server = Server::start(FakeEngine::leader()).await;
        let address = server.address;

        // No client certificate: the probes only.
        let anonymous = server.client(None);
        let answer = anonymous
            .request(address, "GET", "/healthz", b"")
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = anonymous
            .request(address, "POST", "/v1/entries", b"hello")
            .await
            .unwrap();
        assert_eq!(status_of(&answer), "401", "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer realm=\"dledger\""),
            "{answer}"
        );
        assert!(answer.contains("\"unauthenticated\""), "{answer}");
        assert_eq!(server.appended(), 0);

        // An application's certificate writes, and may not administer.
        let billing = server.client(Some("billing"));
        let answer = billing
            .request(address, "POST", "/v1/entries", b"hello")
            .await
            .unwrap();
        assert_eq!(status_of(&answer), "200", "{answer}");
        assert_eq!(server.appended(), 1);
        let answer = billing
            .request(address, "GET", "/v1/entries/1", b"")
            .await
            .unwrap();
        assert!(
            status_of(&answer) == "200" && answer.ends_with("hello"),
            "{answer}"
        );
        let answer = billing
            .request(address, "POST", "/admin/transfer-leadership", b"")
            .await
            .unwrap();
        assert_eq!(status_of(&answer), "403", "{answer}");
        assert!(answer.contains("\"forbidden\""), "{answer}");

        // The operator's administers.
        let operator = server.client(Some("dledger-operator"));
        let answer = operator
            .request(address, "POST", "/admin/transfer-leadership?to=b", b"")
            .await
            .unwrap();
        assert_eq!(status_of(&answer), "200", "{answer}");
        assert!(answer.contains("\"leaderId\":\"b\""), "{answer}");

        // Several requests on one kept-alive connection.
        let mut stream = billing.connect(address).await.unwrap();
        for _ in 0..3 {
            stream
                .write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let mut buffer = vec![0u8; 8192];
            let read = tokio::time::timeout(WAIT, stream.read(&mut buffer))
                .await
                .unwrap()
                .unwrap();
            let answer = String::from_utf8_lossy(&buffer[..read]);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_certificate_of_another_ca_or_plain_http_gets_nothing() {
        let server = Server::start(FakeEngine::leader()).await;
        let address = server.address;

        // Trusts the server's CA, presents one of its own CA's.
        let (other, _) = Ca::new("orders", 30).unwrap();
        let stranger = Client::new(
            server.ca.cert_pem(),
            Some(other.issue(&["dledger-operator".into()], 30).unwrap()),
        );
        for (method, path) in [("POST", "/v1/entries"), ("GET", "/healthz")] {
            match stranger.request(address, method, path, b"hello").await {
                Err(_) => {}
                Ok(answer) => assert!(!answer.starts_with("HTTP/"), "{method} {path}: {answer}"),
            }
        }
        assert_eq!(server.appended(), 0);

        // Plain HTTP on the HTTPS port.
        let tcp = TcpStream::connect(address).await.unwrap();
        match exchange(tcp, "POST", "/v1/entries", b"hello").await {
            Err(_) => {}
            Ok(answer) => assert!(!answer.starts_with("HTTP/"), "{answer}"),
        }
        let tcp = TcpStream::connect(address).await.unwrap();
        match exchange(tcp, "GET", "/healthz", b"").await {
            Err(_) => {}
            Ok(answer) => assert!(!answer.contains("200"), "{answer}"),
        }
        assert_eq!(server.appended(), 0);

        // The server is none the worse for them.
        let answer = server
            .client(Some("billing"))
            .request(address, "POST", "/v1/entries", b"hello")
            .await
            .unwrap();
        assert_eq!(status_of(&answer), "200", "{answer}");
        assert_eq!(server.appended(), 1);
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    async fn server_certificate(client: &Client, address: SocketAddr) -> CertificateDer<'static> {
        let stream = client.connect(address).await.unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_connections_get_a_rotated_certificate() {
        let server = Server::start(FakeEngine::leader()).await;
        let client = server.client(Some("billing"));
        let before = server_certificate(&client, server.address).await;
        assert_eq!(
            before,
            der_of(&std::fs::read_to_string(&server.files.cert).unwrap())
        );

        let renewed = server.ca.issue(&server_names(), 60).unwrap();
        write_member_files(&server.files, &renewed);
        assert!(server.tls.reload().unwrap());
        let after = server_certificate(&client, server.address).await;
        assert_ne!(after, before);
        assert_eq!(after, der_of(&renewed.cert_pem));
        let answer = client
            .request(server.address, "POST", "/v1/entries", b"x")
            .await
            .unwrap();
        assert_eq!(status_of(&answer), "200", "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_redirects_to_the_leader_over_https() {
        let server = Server::start(FakeEngine::follower()).await;
        let answer = server
            .client(Some("billing"))
            .request(server.address, "POST", "/v1/entries", b"x")
            .await
            .unwrap();
        assert_eq!(status_of(&answer), "307", "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("location: https://10.0.0.2:8080/v1/entries\r\n"),
            "{answer}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_shutdown_requests_under_way_are_answered_and_no_more_taken() {
        let mut server = Server::start(FakeEngine::leader()).await;
        let client = server.client(Some("billing"));
        let address = server.address;
        // A long poll, under way when the server stops.
        let polling = {
            let client = server.client(Some("billing"));
            tokio::spawn(async move {
                client
                    .request(address, "GET", "/v1/entries?from=1&wait_ms=1000", b"")
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = server.stop.take().unwrap().send(());
        let stopped = tokio::time::timeout(WAIT, &mut server.task)
            .await
            .expect("serve returned")
            .unwrap();
        assert!(stopped.is_ok());
        let answer = polling.await.unwrap().unwrap();
        assert_eq!(status_of(&answer), "200", "{answer}");
        assert!(client
            .request(address, "GET", "/healthz", b"")
            .await
            .is_err());
    }

    /// `serve_tls` with `max_connections` and `grace`, without auth.
    async fn start_bounded(
        tls: Tls,
        max_connections: usize,
        grace: Duration,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = router_with_limits(FakeEngine::leader(), Limits::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_tls(
            listener,
            router,
            tls,
            async {
                let _ = stopped.await;
            },
            max_connections,
            grace,
        ));
        (address, stop, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_limit_are_closed_at_once() {
        let server = Server::start(FakeEngine::leader()).await;
        let (address, _stop, _task) = start_bounded(server.tls.clone(), 1, SHUTDOWN_GRACE).await;
        let client = server.client(None);
        // One connection holds the only slot, idle before its handshake.
        let idle = TcpStream::connect(address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(client
            .request(address, "GET", "/healthz", b"")
            .await
            .is_err());
        // Once it goes, its slot is free again.
        drop(idle);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = client
            .request(address, "GET", "/healthz", b"")
            .await
            .unwrap();
        assert_eq!(status_of(&answer), "200", "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_longer_than_the_grace_does_not_hold_shutdown_up() {
        let server = Server::start(FakeEngine::leader()).await;
        let (address, stop, task) =
            start_bounded(server.tls.clone(), 16, Duration::from_millis(200)).await;
        let client = server.client(None);
        let polling = tokio::spawn(async move {
            client
                .request(address, "GET", "/v1/entries?from=1&wait_ms=20000", b"")
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("serve returned within the grace")
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        // The connection was cut: no answer.
        let cut = tokio::time::timeout(WAIT, polling).await.unwrap().unwrap();
        assert!(
            cut.as_ref().map_or(true, |answer| answer.is_empty()),
            "{cut:?}"
        );
    }
}
