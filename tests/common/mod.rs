//! Shared harness of the black-box tests: start the real `broker` binary on a free port, talk
//! HTTP and SSE to it.
#![allow(dead_code)]

pub mod nats;
pub mod sse;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

/// Password used for every test user.
pub const PASSWORD: &str = "correct horse battery";

/// How long a test waits for anything before failing.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A running `broker` process with its own database directory.
pub struct Server {
    child: Child,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Database directory.
    pub db: PathBuf,
    /// Its standard-error lines so far.
    log: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh database with extra `args`.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let mut server = Self::start_on(&db, args);
        server._dir = Some(dir);
        server
    }

    /// Starts a server on the database directory `db` (kept by the caller) with extra `args`.
    pub fn start_on(db: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
        cmd.arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg("0")
            .arg("--db")
            .arg(db)
            .args(args);
        Self::spawn(cmd, db.to_path_buf(), "http")
    }

    /// Spawns a prepared command and waits for its "listening on" log line. `PORT` and
    /// `BROKER_*` variables of the test's own environment are not passed on; those the command
    /// sets itself are.
    pub fn spawn(mut cmd: Command, db: PathBuf, scheme: &str) -> Self {
        let explicit: Vec<std::ffi::OsString> =
            cmd.get_envs().map(|(key, _)| key.to_owned()).collect();
        for (key, _) in std::env::vars() {
            if (key == "PORT" || key.starts_with("BROKER_")) && !explicit.iter().any(|k| *k == *key)
            {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn broker");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[broker] {line}");
                lines.lock().expect("log").push(line.clone());
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });
        // Generous: on two cores a cluster node's start waits for its JetStream stream's
        // replica groups while other tests start theirs.
        let url = match rx.recv_timeout(TIMEOUT * 3) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("broker did not start listening (see its log above)");
            }
        };
        let addr: SocketAddr = url
            .split("://")
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse listen address from {url}"));
        let base = format!("{scheme}://127.0.0.1:{}", addr.port());
        Self {
            child,
            addr,
            base,
            db,
            log,
            _dir: None,
        }
    }

    /// The standard-error lines it has written so far (every line before "listening on", at
    /// least).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// The value of the Prometheus metric `name` on this server (panics when it is absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }

    /// Full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, failing the test after [`TIMEOUT`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not exit within {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client for this server.
    pub fn api(&self) -> Api {
        Api {
            http: client(),
            base: self.base.clone(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client without timeouts on bodies (streams stay open).
pub fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(TIMEOUT)
        .build()
        .expect("client")
}

/// A JSON API client bound to one server.
#[derive(Clone)]
pub struct Api {
    /// The underlying client.
    pub http: reqwest::Client,
    /// Base URL.
    pub base: String,
}

impl Api {
    /// `POST path` with a JSON body and an optional bearer token; status and JSON answer.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` with an optional bearer token; status and JSON answer.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("GET");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates `username` (asserting 200) and returns a token for it.
    pub async fn user(&self, username: &str) -> String {
        let (status, body) = self
            .post(
                "/users",
                None,
                &json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "signup {username}: {body}");
        self.login(username).await
    }

    /// Logs `username` in with `password` and returns the JWT.
    pub async fn login_as(&self, username: &str, password: &str) -> String {
        let (status, body) = self
            .post(
                "/login",
                None,
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {username}: {body}");
        body["jwt"].as_str().expect("jwt").to_owned()
    }

    /// Logs `username` in with [`PASSWORD`] and returns the JWT.
    pub async fn login(&self, username: &str) -> String {
        let (status, body) = self
            .post(
                "/login",
                None,
                &json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {username}: {body}");
        body["jwt"].as_str().expect("jwt").to_owned()
    }

    /// Inserts an event (asserting 200) and returns the answer.
    pub async fn insert(
        &self,
        token: &str,
        event: &str,
        data: Value,
        channel: Option<&str>,
    ) -> Value {
        let mut body = json!({"event": event, "data": data});
        if let Some(channel) = channel {
            body["channel"] = json!(channel);
        }
        let (status, answer) = self.post("/insert", Some(token), &body).await;
        assert_eq!(status, StatusCode::OK, "insert {event}: {answer}");
        answer
    }

    /// Opens an SSE stream on `path` (query included) with optional token and `Last-Event-ID`.
    pub async fn stream(
        &self,
        path: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> sse::SseStream {
        sse::SseStream::connect(
            &self.http,
            &format!("{}{path}", self.base),
            token,
            last_event_id,
        )
        .await
    }
}

/// Installs ring as the rustls provider of the test process (reqwest is built without one).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port that was free a moment ago (for tests that must name the port on the command line).
///
/// It is picked below the kernel's ephemeral range (`ip_local_port_range`), so that no outgoing
/// connection of the many tests running at once can take it between this check and the
/// server's bind, as could happen with a port the kernel handed out from that range.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FIRST: u16 = 10_000;
    if low > FIRST + 1000 {
        let random = RandomState::new();
        for attempt in 0u32..200 {
            let port = FIRST + (random.hash_one(attempt) % u64::from(low - FIRST)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Reads from a raw connection until `needle` has arrived in `seen` (everything read so far,
/// kept across calls); returns it as text. Panics after [`TIMEOUT`] or if the connection closes
/// first.
pub async fn read_until<R>(io: &mut R, seen: &mut Vec<u8>, needle: &str) -> String
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = tokio::time::timeout_at(deadline, io.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "waiting for {needle:?}, got {:?}",
                    String::from_utf8_lossy(seen)
                )
            })
            .expect("read");
        assert!(
            n > 0,
            "connection closed before {needle:?}: {:?}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(seen).into_owned()
}
