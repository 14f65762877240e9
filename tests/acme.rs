//! Automatic HTTPS against pebble, Debian's RFC 8555 test server (`apt-get install pebble`,
//! from scripts/install-deps.sh), with pebble-challtestsrv as its DNS: Broker obtains a
//! certificate over TLS-ALPN-01, serves HTTPS with it (checked by a client that trusts only
//! pebble's root), keeps it in `<db>/acme` with mode 0600, and renews it when pebble issues
//! short-lived certificates.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TIMEOUT, free_port};

/// The domain Broker asks a certificate for; the mock DNS answers 127.0.0.1 for it.
const DOMAIN: &str = "broker.test";
/// Lifetime of pebble's certificates in the renewal test, seconds: Broker renews after two
/// thirds of it.
const SHORT_VALIDITY: u64 = 12;

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `openssl` with `args` in `dir`, asserting success.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pebble and its mock DNS, listening on loopback; `https://127.0.0.1:{port}/dir` is the
/// directory, served with a certificate from a CA made here (`ca.pem`).
struct Pebble {
    dir: tempfile::TempDir,
    port: u16,
    management: u16,
    _pebble: Killed,
    _dns: Killed,
}

impl Pebble {
    /// Starts pebble validating TLS-ALPN-01 on `tls_port`, issuing certificates valid for
    /// `validity` seconds when given.
    fn start(tls_port: u16, validity: Option<u64>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=test directory CA",
                "-days",
                "2",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "pebble.key",
                "-out",
                "pebble.csr",
            ],
        );
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "pebble.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "pebble.pem",
            ],
        );
        let port = free_port();
        let management = free_port();
        let dns = free_port();
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": d.join("pebble.pem"),
            "privateKey": d.join("pebble.key"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(secs) = validity {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        std::fs::write(d.join("pebble.json"), config.to_string()).expect("config");
        let dns_child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv (apt-get install pebble)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(d.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble (apt-get install pebble)");
        let pebble = Self {
            dir,
            port,
            management,
            _pebble: Killed(pebble),
            _dns: Killed(dns_child),
        };
        let deadline = Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", management)).is_err()
        {
            assert!(Instant::now() < deadline, "pebble did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        pebble
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root pebble issues under (made at its start), from its management interface.
    async fn issuing_root(&self) -> reqwest::Certificate {
        common::install_crypto_provider();
        let ca = std::fs::read(self.ca()).expect("ca");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
            .build()
            .expect("client");
        let pem = client
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await
            .expect("pebble roots")
            .bytes()
            .await
            .expect("root pem");
        reqwest::Certificate::from_pem(&pem).expect("pebble root")
    }
}

/// A client that trusts only `root` and finds [`DOMAIN`] at 127.0.0.1:`port`.
fn https_client(root: reqwest::Certificate, port: u16) -> reqwest::Client {
    common::install_crypto_provider();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve(DOMAIN, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .expect("client")
}

/// Broker on `port` with its certificate from `pebble`; the directory holds its database.
fn broker(port: u16, pebble: &Pebble) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--db"])
        .arg(&db)
        .args([
            "--no-auth",
            "--acme-domain",
            DOMAIN,
            "--acme-email",
            "ops@broker.test",
        ])
        .args(["--acme-directory", &pebble.directory(), "--acme-ca-root"])
        .arg(pebble.ca());
    (Server::spawn(cmd, db, "https"), dir)
}

/// Waits until the server has logged `count` lines containing `needle`.
fn wait_for_log(server: &Server, needle: &str, count: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while server.log().iter().filter(|l| l.contains(needle)).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {count} log lines with {needle:?} within {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The serial number of the certificate served on `port`, as `openssl s_client` reports it.
fn served_serial(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {DOMAIN} </dev/null \
             2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_certificate_from_pebble_is_served_and_cached_privately() {
    let port = free_port();
    let pebble = Pebble::start(port, None);
    let (server, _db) = broker(port, &pebble);
    // Deployed, then written to the cache.
    wait_for_log(&server, "CertCacheStore", 1);
    let client = https_client(pebble.issuing_root().await, port);
    let resp = client
        .get(format!("https://{DOMAIN}:{port}/health"))
        .send()
        .await
        .expect("HTTPS with pebble's certificate");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);

    let cache = server.db.join("acme");
    let mut files = 0;
    for entry in std::fs::read_dir(&cache).expect("cache dir") {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry
            .expect("entry")
            .metadata()
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        files += 1;
    }
    assert_eq!(files, 2, "a certificate and an account key");
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_while_a_stream_stays_up() {
    let port = free_port();
    let pebble = Pebble::start(port, Some(SHORT_VALIDITY));
    let (server, _db) = broker(port, &pebble);
    wait_for_log(&server, "DeployedNewCert", 1);
    let first = served_serial(port);
    assert!(first.starts_with("serial="), "{first}");
    let client = https_client(pebble.issuing_root().await, port);
    let mut stream = common::sse::SseStream::connect(
        &client,
        &format!("https://{DOMAIN}:{port}/events"),
        None,
        None,
    )
    .await;
    stream.until_synced().await;
    // The second certificate: renewed after two thirds of the first one's life.
    wait_for_log(&server, "DeployedNewCert", 2);
    let second = served_serial(port);
    assert_ne!(first, second, "a new certificate is served");
    let resp = client
        .get(format!("https://{DOMAIN}:{port}/health"))
        .send()
        .await
        .expect("HTTPS after the renewal");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    // The stream opened before the renewal still delivers.
    let (status, _) = common::Api {
        http: client.clone(),
        base: format!("https://{DOMAIN}:{port}"),
    }
    .post(
        "/insert",
        None,
        &serde_json::json!({"event": "after", "data": 1}),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(stream.next_event().await.event, "after");
}
