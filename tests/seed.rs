//! The original Broker's "Run Example", black-box: the library entry point as
//! `examples/seed.rs` calls it (`broker::broker_run("*")`), and `make client`'s demo page.
//!
//! The seed example is the binary that `cargo test --all-targets` (what `make test` runs) or
//! `cargo build --examples` builds beside `broker`; a test cannot build it itself, as cargo
//! keeps the build directory locked while tests run.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{Server, TIMEOUT, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The seed example built beside the `broker` binary.
fn seed_example() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_broker"));
    let path = bin
        .parent()
        .expect("target directory")
        .join("examples")
        .join("seed");
    assert!(
        path.is_file(),
        "{} is missing: build the examples first (`cargo build --examples`, or \
         `cargo test --all-targets` as `make test` does)",
        path.display()
    );
    path
}

/// Starts the seed example in `dir` (its working directory) on a free port, with `env` set.
fn start_seed(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(seed_example());
    cmd.current_dir(dir)
        .env("PORT", "0")
        .env("BROKER_HOST", "127.0.0.1")
        .envs(env.iter().copied());
    let db = env
        .iter()
        .find(|(k, _)| *k == "BROKER_DB")
        .map_or_else(|| dir.join("tmp"), |(_, v)| PathBuf::from(v));
    Server::spawn(cmd, db, "http")
}

fn insert_body(name: &str) -> Value {
    json!({"event": "user", "data": {"name": name}})
}

const OPEN_WARNING: &str = "AUTHENTICATION IS OFF";

#[tokio::test]
async fn seed_example_is_open_and_keeps_its_data_in_tmp() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut server = start_seed(work.path(), &[]);
    let warning = server
        .log()
        .into_iter()
        .find(|line| line.contains(OPEN_WARNING))
        .expect("a warning that authentication is off");
    assert!(
        warning.contains("BROKER_JWT_SECRET"),
        "it names the variable that turns authentication on: {warning}"
    );

    // No token anywhere: stream, insert, audit.
    let api = server.api();
    let mut stream = api.stream("/events", None, None).await;
    let (snapshot, _) = stream.until_synced().await;
    assert!(snapshot.is_empty(), "a new database: {snapshot:?}");
    let (status, answer) = api.post("/insert", None, &insert_body("Ada")).await;
    assert_eq!(status, StatusCode::OK, "insert without a token: {answer}");
    let live = stream.next_event().await;
    assert_eq!(live.event, "user");
    assert_eq!(live.json(), json!({"name": "Ada"}));
    let (status, audit) = api.get("/audit/user", None).await;
    assert_eq!(status, StatusCode::OK, "audit without a token: {audit}");
    assert_eq!(audit.as_object().map(|o| o.len()), Some(1), "{audit}");

    // The origin passed to broker_run ("*") is the CORS origin.
    let resp = client()
        .get(server.url("/audit/user"))
        .header("Origin", "http://app.example")
        .send()
        .await
        .expect("GET with Origin");
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );

    // The database is ./tmp of the working directory, and it is the one a restart reads.
    assert!(work.path().join("tmp").join("broker.redb").is_file());
    assert!(!work.path().join("data").exists(), "nothing in ./data");
    server.kill();
    let server = start_seed(work.path(), &[]);
    let (snapshot, _) = server
        .api()
        .stream("/events", None, None)
        .await
        .until_synced()
        .await;
    let names: Vec<Value> = snapshot.iter().map(|e| e.json()).collect();
    assert_eq!(
        names,
        vec![json!({"name": "Ada"})],
        "the restart syncs from ./tmp"
    );
}

#[tokio::test]
async fn broker_db_moves_the_seed_database() {
    let work = tempfile::tempdir().expect("tempdir");
    let elsewhere = work.path().join("elsewhere");
    let db = elsewhere.to_str().expect("utf-8 path");
    let server = start_seed(work.path(), &[("BROKER_DB", db)]);
    let (status, answer) = server
        .api()
        .post("/insert", None, &insert_body("Grace"))
        .await;
    assert_eq!(status, StatusCode::OK, "still open: {answer}");
    assert!(elsewhere.join("broker.redb").is_file());
    assert!(!work.path().join("tmp").exists(), "nothing in ./tmp");
}

#[tokio::test]
async fn an_authentication_variable_turns_authentication_back_on() {
    for env in [
        ("BROKER_JWT_SECRET", "a seed secret of thirty-two bytes!"),
        ("BROKER_NO_AUTH", "false"),
        ("BROKER_SIGNUP", "admin"),
    ] {
        let work = tempfile::tempdir().expect("tempdir");
        let server = start_seed(work.path(), &[env]);
        assert!(
            !server.log().iter().any(|line| line.contains(OPEN_WARNING)),
            "{env:?}: no open-mode warning"
        );
        let api = server.api();
        let (status, answer) = api.post("/insert", None, &insert_body("Ada")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{env:?}: {answer}");
        let (status, _) = api.get("/audit/user", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{env:?}");
        if env.0 != "BROKER_SIGNUP" {
            // Users work as for the binary.
            let token = api.user("ada").await;
            api.insert(&token, "user", json!({"name": "Ada"}), None)
                .await;
        }
    }
}

#[tokio::test]
async fn open_mode_stays_when_no_auth_is_true() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start_seed(work.path(), &[("BROKER_NO_AUTH", "true")]);
    let (status, answer) = server
        .api()
        .post("/insert", None, &insert_body("Ada"))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn the_binary_keeps_its_defaults() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.current_dir(work.path())
        .args(["--host", "127.0.0.1", "--port", "0"]);
    let server = Server::spawn(cmd, work.path().join("data"), "http");
    let (status, _) = server
        .api()
        .post("/insert", None, &insert_body("Ada"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "authentication is on");
    assert!(work.path().join("data").join("broker.redb").is_file());
    assert!(!work.path().join("tmp").exists());
}

/// `make` in the repository with `args`, its environment free of an outer make's.
fn make(args: &[&str]) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-s")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env_remove("BROKER_URL")
        .env_remove("PORT")
        .env_remove("CLIENT_PORT");
    cmd
}

#[test]
fn make_runs_the_seed_example_by_default() {
    let out = make(&["-n"]).output().expect("make -n");
    assert!(out.status.success(), "{out:?}");
    let recipe = String::from_utf8_lossy(&out.stdout);
    assert!(
        recipe.contains("PORT=8080") && recipe.contains("run --release --example seed"),
        "make's default goal: {recipe}"
    );
}

/// A command started in a process group of its own, which is killed (all of it) on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn make_client_serves_the_demo_against_the_seed_example() {
    use std::os::unix::process::CommandExt;

    let work = tempfile::tempdir().expect("tempdir");
    let seed = start_seed(work.path(), &[]);
    let port = seed.addr.port().to_string();

    let mut cmd = make(&["client", &format!("PORT={port}"), "CLIENT_PORT=0"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn make client");
    let stdout = child.stdout.take().expect("stdout");
    let _group = Group(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[make client] {line}");
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(TIMEOUT)
        .expect("make client prints the URL to open");
    let page_url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    let origin = page_url.trim_end_matches('/').to_owned();

    let http = client();
    let get = |path: &str| {
        let req = http.get(format!("{origin}{path}"));
        async move {
            let resp = req.send().await.expect("GET from make client");
            let status = resp.status();
            (status, resp.text().await.expect("body"))
        }
    };
    let (status, page) = get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<title>Broker demo</title>"), "the demo page");
    let (status, script) = get("/demo/broker-client.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(script.contains("export class Broker"), "the JS client");
    let (status, _) = get("/demo/sse.js").await;
    assert_eq!(status, StatusCode::OK);
    let (status, config) = get("/demo/config.json").await;
    assert_eq!(status, StatusCode::OK);
    let config: Value = serde_json::from_str(&config).expect("config JSON");
    let broker_url = config["url"].as_str().expect("config names the Broker");
    assert_eq!(broker_url, format!("http://localhost:{port}"));

    // What the page does next, from its origin: find out that no login is needed, then insert
    // across origins (a preflighted JSON POST).
    let broker_url = broker_url.replace("localhost", "127.0.0.1");
    let probe = http
        .get(format!("{broker_url}/audit/user"))
        .header("Origin", &origin)
        .send()
        .await
        .expect("probe");
    assert_ne!(probe.status(), StatusCode::UNAUTHORIZED, "open mode");
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{broker_url}/insert"))
        .header("Origin", &origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{preflight:?}");
    assert_eq!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
}
