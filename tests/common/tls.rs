//! Servers on TLS with a fresh self-signed certificate, and clients that trust it: reqwest,
//! and a raw TLS socket for byte-for-byte HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::Server;

/// Writes a fresh self-signed RSA certificate for `localhost` and 127.0.0.1 and its key into
/// `dir`, as `cert` and `key`. A leaf certificate (not a CA), so a client's verifier can trust
/// it directly.
pub fn self_signed(dir: &Path, key: &str, cert: &str) {
    let made = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-keyout", key, "-out", cert, "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// A server serving TLS, its certificate, and the directory holding both and the database.
pub struct TlsServer {
    /// The server, its address on 127.0.0.1.
    pub server: Server,
    /// An HTTPS client (HTTP/1.1 or HTTP/2 by ALPN) that trusts the certificate.
    pub https: reqwest::Client,
    /// The directory of the certificate, the key and the database.
    pub dir: tempfile::TempDir,
}

impl TlsServer {
    /// A server with `args` serving TLS on a fresh self-signed certificate for `localhost`.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        self_signed(dir.path(), "key.pem", "cert.pem");
        let db = dir.path().join("db");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_broker"));
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--no-auth"])
            .args(args)
            .arg("--db")
            .arg(&db)
            .arg("--tls-cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.path().join("key.pem"));
        let server = Server::spawn(cmd, db, "https");
        super::install_crypto_provider();
        let https = Self::client_for(&dir.path().join("cert.pem"), false);
        Self { server, https, dir }
    }

    /// The certificate's file.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `https://localhost:PORT` and `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.server.addr.port())
    }

    /// An HTTPS client trusting `cert`; HTTP/1.1 only when `http1`.
    pub fn client_for(cert: &Path, http1: bool) -> reqwest::Client {
        let cert = std::fs::read(cert).expect("cert");
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&cert).expect("cert"));
        if http1 {
            builder = builder.http1_only();
        }
        builder.build().expect("client")
    }

    /// A raw TLS connection to the server offering `alpn`, its handshake done.
    pub async fn connect(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        self.connect_with(alpn, rustls::DEFAULT_VERSIONS).await
    }

    /// A raw TLS connection offering `alpn` and the TLS `versions`, its handshake done.
    pub async fn connect_with(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsStream<TcpStream> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.cert()).expect("cert"))
            .expect("root");
        let mut config = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(self.server.addr).await.expect("connect");
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().expect("name"), tcp)
            .await
            .expect("handshake")
    }
}
