//! A nats-server for the tests inside the crate: one server with JetStream in a temporary
//! directory, killed when dropped. The binary is the one `scripts/install-nats.sh` installs
//! (target/nats-venv/bin/nats-server), or `$BROKER_NATS_SERVER`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;

use super::NatsOptions;

/// A single nats-server with JetStream in a temporary directory, killed on drop.
pub(crate) struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsServer {
    /// Starts the server and waits until it accepts connections with JetStream ready.
    pub(crate) async fn start() -> Self {
        let binary = std::env::var_os("BROKER_NATS_SERVER").map_or_else(
            || {
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("target/nats-venv/bin/nats-server")
            },
            std::path::PathBuf::from,
        );
        assert!(
            binary.is_file(),
            "nats-server is not installed at {}: run scripts/install-nats.sh",
            binary.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(binary)
            .args([
                "--addr",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--jetstream",
            ])
            .arg("--store_dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let server = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = async_nats::connect(&server.url).await
                && jetstream::new(client).query_account().await.is_ok()
            {
                return server;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client URL (`nats://127.0.0.1:PORT`).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Options for a store whose stream and buckets are named with `prefix`, one replica.
    pub(crate) fn options(&self, prefix: String) -> NatsOptions {
        NatsOptions {
            urls: vec![self.url.clone()],
            user_password: None,
            token: None,
            creds: None,
            replicas: 1,
            prefix,
        }
    }
}
