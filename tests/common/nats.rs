//! A 3-node nats-server cluster with JetStream for the cluster tests: loopback ports picked free,
//! storage in temporary directories, every node killed when the cluster is dropped.
//!
//! The binary is the one `scripts/install-nats.sh` installs (target/nats-venv/bin/nats-server),
//! or `$BROKER_NATS_SERVER`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{TIMEOUT, free_port};

/// The nats-server binary the tests run; panics with the command that installs it when absent.
pub fn nats_server_binary() -> PathBuf {
    let path = std::env::var_os("BROKER_NATS_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nats-venv/bin/nats-server"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "nats-server is not installed at {}: run scripts/install-nats.sh (or `make deps`), \
         or point BROKER_NATS_SERVER at a nats-server >= 2.12",
        path.display()
    );
    path
}

/// Most clusters one test process runs at once. Every test of a binary runs at the same time;
/// on two cores, a dozen 3-node clusters starting together (each electing its leaders) made
/// Broker nodes wait past their start-up deadline. The others wait for a slot.
const MAX_CLUSTERS_AT_ONCE: usize = 3;

/// Clusters running in this process, and the tests waiting for a slot.
static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A running cluster's place among [`MAX_CLUSTERS_AT_ONCE`], given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Self {
        let (count, freed) = &RUNNING;
        let mut running = count.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_CLUSTERS_AT_ONCE {
            running = freed.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Self
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        let mut running = count.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        freed.notify_one();
    }
}

/// One node's fixed identity: its ports and storage survive a restart.
struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: PathBuf,
    child: Option<Child>,
}

/// A running JetStream cluster of nats-server nodes on loopback.
pub struct NatsCluster {
    nodes: Vec<Node>,
    routes: String,
    _dir: tempfile::TempDir,
    /// Dropped after the nodes are killed (see the `Drop` impl).
    _slot: Slot,
}

impl NatsCluster {
    /// Starts a cluster of three nodes and waits until JetStream is ready on each.
    pub fn start() -> Self {
        Self::start_n(3)
    }

    /// Starts `n` nodes (1 gives a single server without clustering) and waits until each is
    /// healthy, JetStream included.
    pub fn start_n(n: usize) -> Self {
        let binary = nats_server_binary();
        let slot = Slot::take();
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client_port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                store: dir.path().join(format!("n{}", i + 1)),
                child: None,
            })
            .collect();
        let routes = nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            nodes,
            routes,
            _dir: dir,
            _slot: slot,
        };
        for i in 0..n {
            cluster.spawn(i, &binary);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize, binary: &PathBuf) {
        let clustered = self.nodes.len() > 1;
        let node = &mut self.nodes[i];
        let mut cmd = Command::new(binary);
        cmd.arg("--addr")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(node.client_port.to_string())
            .arg("--http_port")
            .arg(node.monitor_port.to_string())
            .arg("--server_name")
            .arg(&node.name)
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(&node.store);
        if clustered {
            cmd.arg("--cluster_name")
                .arg("broker-test")
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", node.cluster_port))
                .arg("--routes")
                .arg(&self.routes);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn nats-server");
        if let Some(stderr) = child.stderr.take() {
            let name = node.name.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if std::env::var_os("NATS_LOG").is_some() {
                        eprintln!("[nats {name}] {line}");
                    }
                }
            });
        }
        node.child = Some(child);
    }

    /// Waits until node `i` answers its health check (JetStream and its meta leader included).
    pub fn wait_healthy(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let deadline = Instant::now() + TIMEOUT * 3;
        loop {
            if http_status(node.monitor_port, "/healthz") == Some(200) {
                return;
            }
            if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                panic!(
                    "nats-server {} exited ({status}) before it was healthy (NATS_LOG=1 shows its log)",
                    node.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} was not healthy within {:?} (NATS_LOG=1 shows its log)",
                node.name,
                TIMEOUT * 3
            );
            // The health endpoint is the only signal: ask again shortly.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `nats://127.0.0.1:PORT` of every node, comma-separated (Broker's `--nats`).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Kills node `i` with SIGKILL and reaps it; its storage stays for [`Self::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and storage and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let binary = nats_server_binary();
        self.spawn(i, &binary);
        self.wait_healthy(i);
    }

    /// Kills every node, starts them all again on their ports and storage, and waits until
    /// each is healthy (a lone node of a cluster never is: it needs a quorum).
    pub fn restart_all(&mut self) {
        let binary = nats_server_binary();
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for i in 0..self.nodes.len() {
            self.spawn(i, &binary);
        }
        for i in 0..self.nodes.len() {
            self.wait_healthy(i);
        }
    }

    /// Index of the node that leads JetStream stream `name`, as node `ask` reports it.
    pub fn stream_leader(&self, ask: usize, name: &str) -> Option<usize> {
        let body = http_body(
            self.nodes[ask].monitor_port,
            "/jsz?accounts=true&streams=true",
        )?;
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        let leader = jsz["account_details"]
            .as_array()?
            .iter()
            .flat_map(|account| {
                account["stream_detail"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|stream| stream["name"] == name)?["cluster"]["leader"]
            .as_str()?
            .to_owned();
        self.nodes.iter().position(|node| node.name == leader)
    }

    /// Whether node `i` is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The whole answer to `GET path` on a loopback port, `None` when nothing answers. HTTP/1.0,
/// so the body is never chunked.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut all = String::new();
    conn.read_to_string(&mut all).ok()?;
    Some(all)
}

/// Body of `GET path` on a loopback port, `None` when nothing answers.
pub fn http_body(port: u16, path: &str) -> Option<String> {
    http_get(port, path)?
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// Status code of `GET path` on a loopback port, `None` when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
