//! Optional TLS for the HTTP/WebSocket listener (`server.tls.cert`,
//! `server.tls.key`).
//!
//! # How to drive it
//!
//! At start, when both files are configured, call [`load_server_config`]
//! once and stop with its error if it fails: the error names the file and
//! what is wrong with it. Each worker then wraps its listener's accepted
//! connections with the [`acceptor`] made from that one shared config and
//! hands the TLS stream to hyper as it would the plain one. Without the two
//! files the listener speaks plain HTTP (behind a TLS-terminating proxy or
//! load balancer, for example).
//!
//! The certificate file holds the PEM certificate chain, leaf first; the key
//! file holds the leaf's unencrypted PEM private key as PKCS#8
//! (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
//! Other PEM sections in either file are ignored, so one file holding both
//! works when named twice. The config uses the *ring* crypto provider,
//! rustls's safe default protocol versions (TLS 1.2 and 1.3) and ALPN
//! `http/1.1` only: the WebSocket upgrade needs HTTP/1.1.
//!
//! ```
//! use std::path::Path;
//! use voxproxy::tls::{acceptor, load_server_config};
//!
//! let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata");
//! let config = load_server_config(&dir.join("ec-cert.pem"), &dir.join("ec-key-pkcs8.pem"))?;
//! assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
//! let acceptor = acceptor(config);
//! // per connection: `let tls_stream = acceptor.accept(tcp_stream).await?;`
//! # drop(acceptor);
//! # Ok::<(), voxproxy::tls::TlsError>(())
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the listener's TLS configuration could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read (missing, no permission, a directory).
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A file has a PEM section that cannot be decoded.
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with the PEM text.
        detail: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no unencrypted private key section.
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key does not belong to the certificate.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the certificate or the key (unsupported key type, a
    /// certificate that does not parse).
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => write!(f, "cannot read TLS file {}: {source}", path.display()),
            TlsError::Pem { path, detail } => {
                write!(f, "TLS file {} is not valid PEM: {detail}", path.display())
            }
            TlsError::NoCertificate { path } => write!(
                f,
                "TLS certificate file {} holds no certificate (expected a PEM \"BEGIN CERTIFICATE\" section)",
                path.display()
            ),
            TlsError::NoPrivateKey { path } => write!(
                f,
                "TLS key file {} holds no private key (expected an unencrypted PEM \"BEGIN PRIVATE KEY\", \
                 \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" section)",
                path.display()
            ),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "TLS private key {} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Rejected { cert, key, source } => write!(
                f,
                "TLS certificate {} with key {} was refused: {source}",
                cert.display(),
                key.display()
            ),
        }
    }
}

impl core::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Rejected { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Loads the listener's certificate chain and private key into a rustls
/// server config (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`).
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_owned() });
    }

    let key_pem = read(key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: key.to_owned() },
        e => pem_error(key, &e),
    })?;

    let refused = |source: rustls::Error| match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned() }
        }
        source => TlsError::Rejected { cert: cert.to_owned(), key: key.to_owned(), source },
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The acceptor a worker wraps each accepted TCP connection with.
#[must_use]
pub fn acceptor(config: Arc<ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn pem_error(path: &Path, error: &pem::Error) -> TlsError {
    let detail = match error {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("a \"{}\" section has no END line", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line \"{}\"", String::from_utf8_lossy(line).trim())
        }
        pem::Error::Base64Decode(_) => "a section's body is not valid base64".to_owned(),
        other => other.to_string(),
    };
    TlsError::Pem { path: path.to_owned(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata").join(name)
    }

    #[test]
    fn loads_pkcs8_sec1_and_pkcs1_keys() {
        for (cert, key) in [
            ("ec-cert.pem", "ec-key-pkcs8.pem"),
            ("ec-cert.pem", "ec-key-sec1.pem"),
            ("rsa-cert.pem", "rsa-key-pkcs1.pem"),
        ] {
            let config = load_server_config(&testdata(cert), &testdata(key))
                .unwrap_or_else(|e| panic!("{cert} + {key}: {e}"));
            assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        }
    }

    #[test]
    fn one_file_holding_both_works() {
        let dir = tempfile::tempdir().unwrap();
        let both = dir.path().join("both.pem");
        let mut text = std::fs::read(testdata("ec-key-pkcs8.pem")).unwrap();
        text.extend(std::fs::read(testdata("ec-cert.pem")).unwrap());
        std::fs::write(&both, text).unwrap();
        assert!(load_server_config(&both, &both).is_ok());
    }

    #[test]
    fn missing_file_is_named() {
        let missing = testdata("no-such-file.pem");
        let err = load_server_config(&missing, &testdata("ec-key-pkcs8.pem")).unwrap_err();
        assert!(
            matches!(&err, TlsError::Read { path, source } if *path == missing && source.kind() == io::ErrorKind::NotFound)
        );
        assert!(err.to_string().contains("no-such-file.pem"), "{err}");

        let err = load_server_config(&testdata("ec-cert.pem"), &missing).unwrap_err();
        assert!(matches!(&err, TlsError::Read { path, .. } if *path == missing));
    }

    #[test]
    fn empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let err = load_server_config(&empty, &testdata("ec-key-pkcs8.pem")).unwrap_err();
        assert!(matches!(&err, TlsError::NoCertificate { path } if *path == empty), "{err}");
        let err = load_server_config(&testdata("ec-cert.pem"), &empty).unwrap_err();
        assert!(matches!(&err, TlsError::NoPrivateKey { path } if *path == empty), "{err}");
    }

    #[test]
    fn files_swapped_or_mismatched() {
        let cert = testdata("ec-cert.pem");
        let key = testdata("ec-key-pkcs8.pem");
        let err = load_server_config(&cert, &cert).unwrap_err();
        assert!(matches!(&err, TlsError::NoPrivateKey { path } if *path == cert), "{err}");
        let err = load_server_config(&key, &key).unwrap_err();
        assert!(matches!(&err, TlsError::NoCertificate { path } if *path == key), "{err}");

        let err = load_server_config(&cert, &testdata("rsa-key-pkcs1.pem")).unwrap_err();
        assert!(matches!(&err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("rsa-key-pkcs1.pem"), "{err}");
    }

    #[test]
    fn broken_pem_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let truncated = dir.path().join("truncated.pem");
        let text = std::fs::read_to_string(testdata("ec-cert.pem")).unwrap();
        std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
        let err = load_server_config(&truncated, &testdata("ec-key-pkcs8.pem")).unwrap_err();
        assert!(matches!(&err, TlsError::Pem { path, .. } if *path == truncated), "{err}");
        assert!(err.to_string().contains("\"CERTIFICATE\" section has no END line"), "{err}");

        // Well-formed PEM around bytes that are not a certificate.
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let err = load_server_config(&garbage, &testdata("ec-key-pkcs8.pem")).unwrap_err();
        assert!(matches!(&err, TlsError::Rejected { .. }), "{err}");
    }

    /// A client trusting only the test certificate completes a handshake
    /// with the loaded config over loopback, agrees on `http/1.1` and
    /// exchanges data both ways.
    #[test]
    fn handshake_over_loopback() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for (cert, key) in [("ec-cert.pem", "ec-key-sec1.pem"), ("rsa-cert.pem", "rsa-key-pkcs1.pem")] {
            let server_config = load_server_config(&testdata(cert), &testdata(key)).unwrap();

            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(testdata(cert)).unwrap();
            for der in CertificateDer::pem_slice_iter(&pem) {
                roots.add(der.unwrap()).unwrap();
            }
            let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            client_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let connector = TlsConnector::from(Arc::new(client_config));

            let exchange = async {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let server = async {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let mut tls = acceptor(server_config).accept(tcp).await.unwrap();
                    let mut request = [0u8; 4];
                    tls.read_exact(&mut request).await.unwrap();
                    assert_eq!(&request, b"ping");
                    tls.write_all(b"pong").await.unwrap();
                    tls.shutdown().await.unwrap();
                };
                let client = async {
                    let tcp = TcpStream::connect(addr).await.unwrap();
                    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                    let mut tls = connector.connect(name, tcp).await.unwrap();
                    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
                    tls.write_all(b"ping").await.unwrap();
                    let mut reply = Vec::new();
                    tls.read_to_end(&mut reply).await.unwrap();
                    assert_eq!(reply, b"pong");
                };
                tokio::join!(server, client);
            };
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), exchange).await.expect("TLS exchange hung")
            });
        }
    }
}
