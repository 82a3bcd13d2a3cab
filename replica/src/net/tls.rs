//! Mutual TLS for port 20911 and HTTPS: the member's certificate, key and
//! the group's CA, read from PEM files and read again when they change.
//!
//! Kubernetes updates a mounted Secret in place (it swaps a symlink), so
//! the files are polled and compared by content: a new certificate is used
//! for the next connection without a restart, and a half-written or
//! invalid set is logged and ignored, the previous one staying in use.
//!
//! What a certificate proves is decided by its names (its DNS subject
//! alternative names, checked like a server name): a member's certificate
//! names its member id (`orders-0`) beside the addresses it is reached at.
//! Rights are decided elsewhere; this module only verifies chains and
//! names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use super::stream::Stream;

/// How often the files are read again by default.
pub const DEFAULT_RELOAD_PERIOD_MS: u64 = 5_000;

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This member's certificate chain (its own certificate first).
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates peers' and clients' certificates must chain to.
    pub ca: PathBuf,
}

/// Why a set of files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file held no usable PEM item of the kind expected.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the set (a key that does not match the certificate,
    /// a CA that is not a certificate authority, ...).
    #[error("the certificate, key and CA do not make a TLS configuration: {0}")]
    Config(String),
}

/// Counters of reloads, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsStats {
    /// Sets of files taken into use after the first.
    pub reloads: u64,
    /// Changed sets that could not be used (the previous one stayed).
    pub reload_failures: u64,
}

/// The TLS configuration in use, shared by every connection of a member.
/// Cloning is cheap; every clone sees reloads.
#[derive(Clone)]
pub struct Tls {
    files: Arc<TlsFiles>,
    current: Arc<RwLock<Arc<Loaded>>>,
    reloads: Arc<AtomicU64>,
    reload_failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

struct Loaded {
    /// The three files' bytes, to tell a change.
    contents: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// When this member's certificate expires, Unix seconds (`None` when
    /// its validity cannot be read, which rustls does not need).
    not_after_s: Option<i64>,
}

impl Tls {
    /// Reads `files`; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let loaded = Loaded::read(&files)?;
        Ok(Tls {
            files: Arc::new(files),
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            reloads: Arc::new(AtomicU64::new(0)),
            reload_failures: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again and takes them into use if they changed:
    /// `Ok(true)` when they did. On an error the previous set stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let contents = read_all(&self.files)?;
        if self.loaded().contents == contents {
            return Ok(false);
        }
        match Loaded::build(&self.files, contents) {
            Ok(loaded) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(error) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// When the certificate in use expires, Unix seconds: what `/status`
    /// reports, so whoever rotates certificates sees each member take up
    /// its new one.
    pub fn certificate_not_after_s(&self) -> Option<i64> {
        self.loaded().not_after_s
    }

    /// Reload counters so far.
    pub fn stats(&self) -> TlsStats {
        TlsStats {
            reloads: self.reloads.load(Ordering::Relaxed),
            reload_failures: self.reload_failures.load(Ordering::Relaxed),
        }
    }

    /// The server side's configuration now in use (client certificates
    /// are asked for and verified, but not required: a client may
    /// authenticate otherwise, and what a connection may do is decided
    /// from what it proved).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.loaded().server.clone()
    }

    /// The connecting side's configuration now in use (presents this
    /// member's certificate, trusts the CA).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.loaded().client.clone()
    }

    /// The server side of a handshake on `tcp`.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<Stream> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config());
        let stream = acceptor.accept(tcp).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }

    /// The client side of a handshake on `tcp` to `host` (a DNS name or
    /// an IP address; the peer's certificate must name it).
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> std::io::Result<Stream> {
        let name = ServerName::try_from(host.to_string()).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host:?} is not a name a certificate can carry: {error}"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let stream = connector.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Whether `certificate` names `name` (a DNS subject alternative name,
/// matched like a server name, wildcards included). Its chain was
/// verified by the handshake; this checks who it is for.
pub fn certificate_names(certificate: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(certificate) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The name a member's certificate must carry: its member id without the
/// incarnation (`orders-0` for `orders-0#0b2002efe12e0d2e`), so a
/// certificate outlives a member rejoining with an empty disk.
pub fn member_name(member_id: &str) -> &str {
    member_id
        .split_once('#')
        .map_or(member_id, |(name, _)| name)
}

/// The host of a `host:port` address (brackets of an IPv6 address
/// removed), the name a server's certificate must carry.
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_all(files: &TlsFiles) -> Result<[Vec<u8>; 3], TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok([read(&files.cert)?, read(&files.key)?, read(&files.ca)?])
}

impl Loaded {
    fn read(files: &TlsFiles) -> Result<Loaded, TlsError> {
        Loaded::build(files, read_all(files)?)
    }

    fn build(files: &TlsFiles, contents: [Vec<u8>; 3]) -> Result<Loaded, TlsError> {
        let pem_error = |path: &Path, reason: String| TlsError::Pem {
            path: path.to_path_buf(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(&contents[0])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| pem_error(&files.cert, error.to_string()))?;
        if chain.is_empty() {
            return Err(pem_error(&files.cert, "no CERTIFICATE in it".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&contents[1])
            .map_err(|error| pem_error(&files.key, format!("no usable private key: {error}")))?;
        let mut roots = RootCertStore::empty();
        let mut cas = 0usize;
        for ca in CertificateDer::pem_slice_iter(&contents[2]) {
            let ca = ca.map_err(|error| pem_error(&files.ca, error.to_string()))?;
            roots
                .add(ca)
                .map_err(|error| pem_error(&files.ca, format!("not a CA certificate: {error}")))?;
            cas += 1;
        }
        if cas == 0 {
            return Err(pem_error(&files.ca, "no CERTIFICATE in it".into()));
        }
        let roots = Arc::new(roots);
        let config_error = |error: rustls::Error| TlsError::Config(error.to_string());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|error| TlsError::Config(error.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config_error)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_error)?;
        let not_after_s = std::str::from_utf8(&contents[0])
            .ok()
            .and_then(|pem| crate::certs::read_certificate(pem).ok())
            .map(|facts| facts.not_after.unix_timestamp());
        Ok(Loaded {
            contents,
            server: Arc::new(server),
            client: Arc::new(client),
            not_after_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Ca;

    fn write(dir: &Path, ca: &Ca, names: &[&str]) -> TlsFiles {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let issued = ca.issue(&names, 1).unwrap();
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        };
        std::fs::write(&files.cert, issued.cert_pem).unwrap();
        std::fs::write(&files.key, issued.key_pem).unwrap();
        std::fs::write(&files.ca, ca.cert_pem()).unwrap();
        files
    }

    #[test]
    fn unusable_files_are_named_and_a_bad_reload_keeps_the_set_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::new("orders", 1).unwrap();
        let files = write(dir.path(), &ca, &["orders-0"]);
        let tls = Tls::load(files.clone()).unwrap();
        assert!(!tls.reload().unwrap(), "nothing changed");

        std::fs::write(&files.key, "not a key").unwrap();
        let error = Tls::load(files.clone()).unwrap_err().to_string();
        assert!(error.contains("tls.key"), "{error}");
        let error = tls.reload().unwrap_err().to_string();
        assert!(error.contains("tls.key"), "{error}");
        assert_eq!(tls.stats().reload_failures, 1);

        // A key that is not the certificate's.
        let other = ca.issue(&["orders-1".into()], 1).unwrap();
        std::fs::write(&files.key, other.key_pem).unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::Config(_))));

        let missing = TlsFiles {
            ca: dir.path().join("absent.crt"),
            ..files.clone()
        };
        let error = Tls::load(missing).unwrap_err().to_string();
        assert!(error.contains("absent.crt"), "{error}");

        // A whole new set is taken.
        write(dir.path(), &ca, &["orders-0"]);
        assert!(tls.reload().unwrap());
        assert_eq!(tls.stats().reloads, 1);
    }

    #[test]
    fn the_certificate_in_use_is_reported_by_its_end_and_follows_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::new("orders", 30).unwrap();
        let files = write(dir.path(), &ca, &["orders-0"]);
        let tls = Tls::load(files.clone()).unwrap();
        let first = tls.certificate_not_after_s().unwrap();
        let in_a_day = time::OffsetDateTime::now_utc().unix_timestamp() + 86_400;
        assert!((first - in_a_day).abs() < 60, "{first} vs {in_a_day}");
        let longer = ca.issue(&["orders-0".into()], 20).unwrap();
        std::fs::write(&files.cert, &longer.cert_pem).unwrap();
        std::fs::write(&files.key, &longer.key_pem).unwrap();
        assert!(tls.reload().unwrap());
        assert_eq!(
            tls.certificate_not_after_s(),
            Some(longer.not_after.unix_timestamp())
        );
    }

    #[test]
    fn names_and_hosts() {
        let (ca, _) = Ca::new("orders", 1).unwrap();
        let issued = ca
            .issue(&["orders-0".into(), "*.orders-peers.ns.svc".into()], 1)
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert!(certificate_names(&der, "orders-0"));
        assert!(certificate_names(&der, "orders-0.orders-peers.ns.svc"));
        assert!(!certificate_names(&der, "orders-1"));
        assert!(!certificate_names(&der, "not a name"));
        assert_eq!(member_name("orders-0#0b2002efe12e0d2e"), "orders-0");
        assert_eq!(member_name("orders-0"), "orders-0");
        assert_eq!(
            host_of("orders-0.orders-peers.ns.svc:20911"),
            "orders-0.orders-peers.ns.svc"
        );
        assert_eq!(host_of("[::1]:20911"), "::1");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
    }
}
