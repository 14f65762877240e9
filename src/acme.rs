//! Automatic HTTPS: certificates from an ACME directory (RFC 8555; Let's Encrypt by default)
//! through `rustls-acme`, validated with TLS-ALPN-01 on the HTTPS port itself.
//!
//! The certificate and the account key are cached in `<db>/acme` (directory 0700, files 0600),
//! so a restart reuses them. A background task drives the ACME state machine: it orders a
//! certificate when there is none, and renews it once two thirds of its lifetime have passed.
//! A renewed certificate is swapped into the TLS resolver in place; connections and streams
//! that are open keep the one they started with, and new handshakes get the new one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use blake2::{Blake2s256, Digest};
use futures_util::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_acme::{AccountCache, AcmeConfig, CertCache};

use crate::config::Config;

/// Let's Encrypt's production directory, the default of `--acme-directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--acme-staging`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The ACME cache's directory inside `--db`.
pub const CACHE_DIR: &str = "acme";
/// ALPN protocols the HTTPS listener offers: HTTP/2, HTTP/1.1, and the TLS-ALPN-01 challenge.
const ALPN: [&[u8]; 3] = [b"h2", b"http/1.1", rustls_acme::acme::ACME_TLS_ALPN_NAME];

/// The directory `config` orders from: `--acme-directory`, else Let's Encrypt (staging with
/// `--acme-staging`).
pub fn directory(config: &Config) -> &str {
    match (&config.acme_directory, config.acme_staging) {
        (Some(url), _) => url,
        (None, true) => LETS_ENCRYPT_STAGING,
        (None, false) => LETS_ENCRYPT,
    }
}

/// Starts certificate management for `config`'s `--acme-domain`s and returns the TLS settings
/// that serve its certificates (and answer TLS-ALPN-01 challenges).
///
/// # Errors
/// When `--acme-ca-root` cannot be read or holds no certificate.
pub fn start(config: &Config) -> Result<rustls::ServerConfig, String> {
    let acme = match config.acme_ca_root.as_deref() {
        Some(path) => {
            AcmeConfig::new_with_client_config(&config.acme_domain, Arc::new(client_config(path)?))
        }
        // The web's roots (webpki-roots).
        None => AcmeConfig::new_with_provider(
            &config.acme_domain,
            Arc::new(rustls::crypto::ring::default_provider()),
        ),
    };
    let mut acme = acme
        .directory(directory(config))
        .cache(PrivateDirCache::new(config.db.join(CACHE_DIR)));
    if let Some(email) = &config.acme_email {
        acme = acme.contact_push(format!("mailto:{email}"));
    }
    let mut state = acme.state();
    let resolver = state.resolver();
    let domains = config.acme_domain.join(",");
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(domains, event = ?ok, "ACME"),
                Err(err) => tracing::warn!(domains, error = %err, "ACME failed; retrying"),
            }
        }
    });
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(server)
}

/// The TLS client settings for talking to a private directory (such as pebble) that
/// `--acme-ca-root`'s PEM roots vouch for: only those are trusted.
fn client_config(path: &Path) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read --acme-ca-root {}: {e}", path.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "--acme-ca-root {} holds no usable certificate",
            path.display()
        ));
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Certificates and account keys as files in one directory, readable by the owner only.
struct PrivateDirCache {
    dir: PathBuf,
}

impl PrivateDirCache {
    fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `prefix` and a hash of the names it is for and the directory.
    fn path(&self, prefix: &str, names: &[String], directory: &str) -> PathBuf {
        let mut hash = Blake2s256::new();
        for name in names {
            hash.update(name.as_bytes());
            hash.update([0]);
        }
        hash.update(directory.as_bytes());
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{prefix}-{hex}"))
    }

    async fn load(&self, path: PathBuf) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn store(&self, path: PathBuf, contents: Vec<u8>) -> std::io::Result<()> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_private(&dir, &path, &contents))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Writes `contents` to `path` (mode 0600) through a temporary file and a rename, so a crash
/// never leaves half a key; creates `dir` (mode 0700) first.
fn write_private(dir: &Path, path: &Path, contents: &[u8]) -> std::io::Result<()> {
    crate::auth::file_modes::create_private_dir(dir);
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[async_trait]
impl CertCache for PrivateDirCache {
    type EC = std::io::Error;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EC> {
        self.load(self.path("cert", domains, directory_url)).await
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), Self::EC> {
        self.store(self.path("cert", domains, directory_url), cert.to_vec())
            .await
    }
}

#[async_trait]
impl AccountCache for PrivateDirCache {
    type EA = std::io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EA> {
        self.load(self.path("account", contact, directory_url))
            .await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), Self::EA> {
        self.store(
            self.path("account", contact, directory_url),
            account.to_vec(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cache_keeps_files_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = PrivateDirCache::new(dir.path().join(CACHE_DIR));
        let domains = vec!["example.org".to_owned()];
        assert!(
            cache
                .load_cert(&domains, "u")
                .await
                .expect("load")
                .is_none()
        );
        cache
            .store_cert(&domains, "u", b"pem")
            .await
            .expect("store");
        assert_eq!(
            cache.load_cert(&domains, "u").await.expect("load"),
            Some(b"pem".to_vec())
        );
        assert!(
            cache
                .load_cert(&domains, "other")
                .await
                .expect("load")
                .is_none()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir_mode = std::fs::metadata(dir.path().join(CACHE_DIR))
                .expect("dir")
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
            for entry in std::fs::read_dir(dir.path().join(CACHE_DIR)).expect("list") {
                let mode = entry
                    .expect("entry")
                    .metadata()
                    .expect("meta")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
    }
}
