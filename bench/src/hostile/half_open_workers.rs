//! Half-open connections in worker processes: one process may hold only 20,000 connections
//! here, so they live in the tool itself started with `--half-open-worker`, which holds its
//! share in a [`Holder`], reports its counts as JSON lines on stdout, and stops on `stop` (or
//! the end of its stdin) with a final line.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Args;
use crate::hostile::half_open::{Counts, Final, Holder, Spec, request_line};
use crate::raw_http::Target;

/// A worker's line on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Report {
    Counts(Counts),
    Final(Final),
}

/// Runs this process as a half-open worker (see the module doc).
pub async fn serve_worker(args: &Args) -> Result<(), String> {
    let url = reqwest::Url::parse(&args.url).map_err(|e| e.to_string())?;
    let h = &args.hostile;
    let spec = Spec {
        target: Target::resolve(&url).await?,
        request: request_line(&h.half_open_path),
        connections: h.half_open.unwrap_or(0),
        index: args.worker_index,
        groups: args.worker_groups,
        addrs: h.attack_addrs,
        refill: h.refill,
        in_time: Duration::from_secs_f64(h.close_deadline()),
        deadline: Instant::now() + Duration::from_secs_f64(args.duration_or(60.0)),
    };
    let holder = Holder::start(spec);
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last = None;
    loop {
        tokio::select! {
            line = commands.next_line() => match line.map_err(|e| e.to_string())?.as_deref() {
                None | Some("stop") => break,
                Some(other) => return Err(format!("half-open worker: unknown command {other:?}")),
            },
            _ = tick.tick() => {
                let counts = holder.counts();
                if last != Some(counts) {
                    last = Some(counts);
                    write_line(&mut out, &Report::Counts(counts)).await?;
                }
            }
        }
    }
    let done = holder.finish().await;
    write_line(&mut out, &Report::Final(done)).await
}

async fn write_line(out: &mut tokio::io::Stdout, report: &Report) -> Result<(), String> {
    let mut text = serde_json::to_string(report).map_err(|e| e.to_string())?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())
}

/// Half-open connections held by worker processes.
pub struct Attack {
    workers: Vec<Worker>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    counts: Arc<Mutex<Counts>>,
    reader: JoinHandle<Result<Final, String>>,
}

impl Attack {
    /// Starts `args.hostile.attack_workers` processes holding `total` connections between
    /// them for at most `seconds`, reopening closed ones when `refill`.
    pub fn spawn(args: &Args, total: usize, refill: bool, seconds: f64) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let groups = usize::try_from(args.hostile.attack_workers).unwrap_or(1);
        let mut workers = Vec::with_capacity(groups);
        for index in 0..groups {
            let mut cmd = Command::new(&exe);
            cmd.arg("--half-open-worker")
                .args(["--url", &args.url])
                .args([
                    "--half-open",
                    &crate::group::share(total, index, groups).to_string(),
                ])
                .args(["--half-open-path", &args.hostile.half_open_path])
                .args(["--header-timeout", &args.hostile.header_timeout.to_string()])
                .args(["--attack-addrs", &args.hostile.attack_addrs.to_string()])
                .args(["--worker-index", &index.to_string()])
                .args(["--worker-groups", &groups.to_string()])
                .args(["--duration", &seconds.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            if refill {
                cmd.arg("--refill");
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot start a half-open worker: {e}"))?;
            let stdin = child.stdin.take().ok_or("worker without stdin")?;
            let stdout = child.stdout.take().ok_or("worker without stdout")?;
            let counts = Arc::new(Mutex::new(Counts::default()));
            let shared = counts.clone();
            let reader = tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
                    match serde_json::from_str(&line) {
                        Ok(Report::Counts(c)) => {
                            if let Ok(mut slot) = shared.lock() {
                                *slot = c;
                            }
                        }
                        Ok(Report::Final(f)) => return Ok(f),
                        Err(e) => return Err(format!("half-open worker said {line:?}: {e}")),
                    }
                }
                Err(format!(
                    "half-open worker {index} ended without its results"
                ))
            });
            workers.push(Worker {
                child,
                stdin,
                counts,
                reader,
            });
        }
        Ok(Self { workers })
    }

    /// The workers' last reported counts, summed.
    pub fn counts(&self) -> Counts {
        self.workers
            .iter()
            .map(|w| w.counts.lock().map(|c| *c).unwrap_or_default())
            .fold(Counts::default(), Counts::add)
    }

    /// Stops the workers (closing their connections) and merges their results. Every worker
    /// is told first: one that closes its connections frees the server's descriptors, and
    /// the others' pending connections would then open and count.
    pub async fn finish(mut self) -> Result<Final, String> {
        for w in &mut self.workers {
            w.stdin
                .write_all(b"stop\n")
                .await
                .map_err(|e| format!("half-open worker gone: {e}"))?;
        }
        let mut all = Final::default();
        for mut w in self.workers {
            let done = w.reader.await.map_err(|e| e.to_string())??;
            let _ = w.child.wait().await;
            all.merge(done);
        }
        Ok(all)
    }
}
