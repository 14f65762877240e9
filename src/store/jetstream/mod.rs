//! Cluster mode's engine: NATS JetStream (`--nats`), through `async-nats`.
//!
//! This module connects to the NATS servers named by `--nats` with the configured credentials
//! and checks that they are recent enough: cluster mode needs nats-server
//! [`MIN_SERVER_VERSION`] or newer, for JetStream's atomic batch publish (a `/publish` batch is
//! one atomic batch with consecutive ids). An older server is refused at start with a message
//! naming the version found and the one needed.

pub mod forward;
pub mod fresh;
pub mod lease;
pub mod local;
pub mod patience;
pub mod record_cache;
pub mod store;
pub mod subject;
#[cfg(test)]
pub(crate) mod test_server;
pub mod version;
pub mod writer;

use std::path::PathBuf;
use std::time::Duration;

use super::StoreError;
pub use version::{MIN_SERVER_VERSION, check_server_version};

/// How to reach NATS: `--nats` and its credential, replica and prefix flags.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:4222`), at least one.
    pub urls: Vec<String>,
    /// `--nats-user` and `--nats-password`.
    pub user_password: Option<(String, String)>,
    /// `--nats-token`.
    pub token: Option<String>,
    /// `--nats-creds`: a `.creds` file (JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// `--nats-replicas`: copies JetStream keeps of each record (1 for a single server).
    pub replicas: usize,
    /// `--nats-prefix`: names of the stream and buckets start with it.
    pub prefix: String,
}

/// A random token of `len` ASCII letters and digits, safe in a subject: a node's id, a batch's.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// How long the first connection may take before start-up fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to NATS and checks the server's version.
///
/// # Errors
/// [`StoreError::Backend`] when no server answers, the credentials are refused, or the server
/// is older than [`MIN_SERVER_VERSION`] (the message names both versions).
pub async fn connect(options: &NatsOptions) -> Result<async_nats::Client, StoreError> {
    let mut connect = async_nats::ConnectOptions::new()
        .name("broker")
        .connection_timeout(CONNECT_TIMEOUT);
    if let Some((user, password)) = &options.user_password {
        connect = connect.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &options.token {
        connect = connect.token(token.clone());
    }
    if let Some(creds) = &options.creds {
        connect = connect.credentials_file(creds).await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot read NATS credentials {} (--nats-creds): {e}",
                creds.display()
            ))
        })?;
    }
    let urls = options.urls.join(",");
    let client = tokio::time::timeout(CONNECT_TIMEOUT, connect.connect(options.urls.clone()))
        .await
        .map_err(|_| {
            StoreError::Backend(format!(
                "cannot connect to NATS at {urls} (--nats): no answer within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| {
            StoreError::Backend(format!("cannot connect to NATS at {urls} (--nats): {e}"))
        })?;
    let info = client.server_info();
    check_server_version(&info.version)
        .map_err(|e| StoreError::Backend(format!("NATS at {urls} (--nats): {e}")))?;
    tracing::info!(
        version = %info.version,
        server = %info.server_name,
        "connected to NATS"
    );
    Ok(client)
}
