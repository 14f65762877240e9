//! broker-bench-bare: the least a server could do for broker-bench's fan-out, on Broker's wire.
//!
//! It answers just enough of Broker's native wire for broker-bench's `broker` profile:
//! sign-up and login (with a fixed token, checked by no one), `GET /events` (every stream gets
//! every event: the tool's subscribers share one channel), `POST /insert` and `POST /publish`.
//!
//! A publish is made durable before it is answered, as in Broker: written into a journal file
//! whose blocks were all written at start (so no allocation or file size has to be committed),
//! then `fdatasync`ed. After the answer, its frames are appended to an in-memory log. Each of
//! `--writers` threads owns a share of the subscribers and sweeps them for as long as any is
//! behind the log, sending each one, with one plain blocking `write()`, a chunk of everything
//! it has not had yet (built once per starting point and shared). That is Broker's coalescing
//! without a runtime: no task, wake, channel receive or filter per subscriber, no keep-alive,
//! no back-pressure (a subscriber that stops reading stalls its writer).
//!
//! It is a measuring device, not a server: broker-bench run against it and against Broker on
//! the same work shows what latency this machine allows with the tool on it, and how much of
//! Broker's latency is Broker's own (docs/BENCHMARKS.md).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use clap::Parser;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The largest request accepted, head and body.
const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// A bare fan-out server speaking broker-bench's `broker` wire.
#[derive(Debug, Parser)]
#[command(name = "broker-bench-bare", version)]
struct Args {
    /// Address to listen on (port 0: any free port, printed on start).
    #[arg(long, default_value = "127.0.0.1:18600")]
    listen: String,
    /// Threads writing to subscribers, each to its own share of them.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// The journal every publish is appended to and fsynced in (a temporary file by default).
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// Every publish's frames, in commit order. A subscriber's cursor is an index into it. It is
/// never trimmed: a benchmark run lasts seconds.
#[derive(Default)]
struct Log {
    publishes: Mutex<Vec<Arc<Vec<u8>>>>,
    /// `publishes.len()`, readable without the lock.
    len: AtomicUsize,
    /// Wakes the writers when `len` grows.
    grew: Condvar,
}

/// A subscriber: its socket and how many publishes it has been sent.
struct Subscriber {
    conn: TcpStream,
    cursor: usize,
}

/// What every connection handler shares.
struct Shared {
    /// Each writer thread's share of the subscribers.
    writers: Vec<Mutex<Vec<Subscriber>>>,
    /// The next writer a new subscriber goes to.
    next_writer: AtomicUsize,
    log: Log,
    /// The journal, behind the lock that orders commits.
    journal: Mutex<Journal>,
    /// The last event id given out.
    last_id: AtomicU64,
}

/// A response's status line and body, and the frames of a publish to send after it.
type Answer = (&'static str, &'static str, Option<Vec<u8>>);

/// `POST /insert`.
#[derive(Deserialize)]
struct Insert<'a> {
    event: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `POST /publish`.
#[derive(Deserialize)]
struct Publish<'a> {
    #[serde(borrow)]
    events: Vec<PublishEvent<'a>>,
}

/// One event of a `POST /publish`.
#[derive(Deserialize)]
struct PublishEvent<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    payload: &'a RawValue,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    broker_bench::system::raise_open_files();
    let listener = listen(&args.listen)?;
    let journal = Journal::create(args.journal.clone())?;
    let shared = Arc::new(Shared {
        writers: (0..args.writers.max(1)).map(|_| Mutex::default()).collect(),
        next_writer: AtomicUsize::new(0),
        log: Log::default(),
        journal: Mutex::new(journal),
        last_id: AtomicU64::new(0),
    });
    for n in 0..shared.writers.len() {
        let shared = shared.clone();
        std::thread::spawn(move || write_loop(&shared, n));
    }
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "broker-bench-bare (pid {}) listening on http://{addr}",
        std::process::id()
    );
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = shared.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, &shared) {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}

/// A listening socket with a backlog deep enough for thousands of subscribers connecting
/// at once (the standard library's is 128).
fn listen(addr: &str) -> Result<TcpListener, String> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    socket.bind(addr).map_err(|e| format!("{addr}: {e}"))?;
    // Listening registers the socket with a reactor, so it is done inside a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    let listener = runtime.block_on(async { socket.listen(8192)?.into_std() });
    let listener = listener.map_err(|e| e.to_string())?;
    listener.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(listener)
}

/// A file of fixed size, written in a circle: a publish is durable once written and synced.
struct Journal {
    file: File,
    at: u64,
}

impl Journal {
    /// The journal's size.
    const SIZE: u64 = 64 * 1024 * 1024;

    /// Creates the journal (in the temporary folder, removed at once, unless `path` is given)
    /// and writes all of it once, so later writes change no block allocation or file size.
    fn create(path: Option<PathBuf>) -> Result<Self, String> {
        let (path, keep) = match path {
            Some(path) => (path, true),
            None => {
                let name = format!("broker-bench-bare-{}", std::process::id());
                (std::env::temp_dir().join(name), false)
            }
        };
        let mut file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
        let block = vec![0u8; 1024 * 1024];
        for _ in 0..Self::SIZE / block.len() as u64 {
            file.write_all(&block).map_err(|e| e.to_string())?;
        }
        file.sync_all().map_err(|e| e.to_string())?;
        Ok(Self { file, at: 0 })
    }

    /// Writes `bytes` after the last write (or from the start, if they do not fit) and waits
    /// for the disk.
    fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        let len = bytes.len() as u64;
        if len > Self::SIZE {
            return Err("a publish larger than the journal".into());
        }
        if self.at + len > Self::SIZE {
            self.at = 0;
        }
        self.file
            .write_all_at(bytes, self.at)
            .map_err(|e| e.to_string())?;
        self.at += len;
        self.file.sync_data().map_err(|e| e.to_string())
    }
}

/// Sweeps this writer's subscribers for as long as any is behind the log, sending each one
/// chunk of everything it has not had (the chunk is built once per distinct cursor and
/// reused), then sleeps until the log grows. A subscriber whose write fails is dropped.
fn write_loop(shared: &Shared, n: usize) {
    let mut swept_to = 0;
    // Chunks built in this sweep, by the cursor they start from; all end at `built_to`.
    let mut chunks: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut built_to = 0;
    loop {
        {
            let Ok(mut publishes) = shared.log.publishes.lock() else {
                return;
            };
            while shared.log.len.load(Ordering::Acquire) == swept_to {
                let Ok(guard) = shared.log.grew.wait(publishes) else {
                    return;
                };
                publishes = guard;
            }
        }
        let Ok(mut subscribers) = shared.writers[n].lock() else {
            return;
        };
        // Every subscriber is at least this far once the sweep is over (the log only grows);
        // if the log grew meanwhile, the next sweep sends the rest.
        swept_to = shared.log.len.load(Ordering::Acquire);
        subscribers.retain_mut(|sub| {
            let end = shared.log.len.load(Ordering::Acquire);
            if sub.cursor >= end {
                return true;
            }
            if end != built_to {
                chunks.clear();
                built_to = end;
            }
            let chunk = chunks
                .entry(sub.cursor)
                .or_insert_with(|| chunk_of(&shared.log, sub.cursor, end));
            sub.cursor = end;
            sub.conn.write_all(chunk).is_ok()
        });
    }
}

/// The log's publishes `from..to`, joined into one HTTP chunk.
fn chunk_of(log: &Log, from: usize, to: usize) -> Vec<u8> {
    let Ok(publishes) = log.publishes.lock() else {
        return Vec::new();
    };
    let body: Vec<u8> = publishes[from..to]
        .iter()
        .flat_map(|p| p.iter().copied())
        .collect();
    let mut chunk = format!("{:x}\r\n", body.len()).into_bytes();
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// Answers one connection's requests until it closes or becomes an event stream.
fn serve(mut conn: TcpStream, shared: &Shared) -> Result<(), String> {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some((method, path, head_len, body_len)) = read_head(&mut conn, &mut buf)? else {
            return Ok(());
        };
        while buf.len() < head_len + body_len {
            read_more(&mut conn, &mut buf)?.ok_or("closed in a request body")?;
        }
        let body = &buf[head_len..head_len + body_len];
        let (status, answer, frames) = match (method.as_str(), path.split('?').next().unwrap_or(""))
        {
            ("POST", "/users") => ("201 Created", "{}", None),
            ("POST", "/login") => ("200 OK", r#"{"jwt":"bare"}"#, None),
            ("GET", "/health") => ("200 OK", r#"{"status":"ok"}"#, None),
            ("GET", "/events") => return subscribe(conn, shared),
            ("POST", "/insert") => match serde_json::from_slice::<Insert<'_>>(body) {
                Ok(insert) => commit(shared, &[(&insert.event, insert.data)])?,
                Err(_) => ("400 Bad Request", r#"{"error":"bad insert"}"#, None),
            },
            ("POST", "/publish") => match serde_json::from_slice::<Publish<'_>>(body) {
                Ok(batch) => {
                    let events: Vec<_> =
                        batch.events.iter().map(|e| (&*e.kind, e.payload)).collect();
                    commit(shared, &events)?
                }
                Err(_) => ("400 Bad Request", r#"{"error":"bad publish"}"#, None),
            },
            _ => ("404 Not Found", r#"{"error":"not found"}"#, None),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        conn.write_all(response.as_bytes())
            .map_err(|e| e.to_string())?;
        // Answered first, then sent, as Broker does: the answer does not wait for the fan-out.
        if let Some(frames) = frames {
            fan_out(shared, frames)?;
        }
        buf.drain(..head_len + body_len);
    }
}

/// Reads until `buf` holds a whole request head: its method, path, head length and body
/// length. `None` if the connection closed between requests.
fn read_head(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(String, String, usize, usize)>, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head_len) =
            req.parse(buf).map_err(|e| format!("bad request: {e}"))?
        {
            let body_len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            if head_len + body_len > MAX_REQUEST {
                return Err("request too large".into());
            }
            let method = req.method.unwrap_or("").to_owned();
            let path = req.path.unwrap_or("").to_owned();
            return Ok(Some((method, path, head_len, body_len)));
        }
        if read_more(conn, buf)?.is_none() {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err("closed in a request head".into())
            };
        }
    }
}

/// Appends what the socket has to `buf`; `None` at its end.
fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>, String> {
    let mut block = [0u8; 8192];
    match conn.read(&mut block).map_err(|e| e.to_string())? {
        0 => Ok(None),
        n => {
            buf.extend_from_slice(&block[..n]);
            Ok(Some(n))
        }
    }
}

/// Opens an event stream: the response head and a `$synced` event (there is no snapshot),
/// then hands the socket to the next writer.
fn subscribe(mut conn: TcpStream, shared: &Shared) -> Result<(), String> {
    let synced = b"event: $synced\ndata: {}\n\n";
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n",
        synced.len()
    );
    let mut first = head.into_bytes();
    first.extend_from_slice(synced);
    first.extend_from_slice(b"\r\n");
    // Under the writer's lock, so that no publish falls between `$synced` and the cursor.
    let n = shared.next_writer.fetch_add(1, Ordering::Relaxed) % shared.writers.len();
    let mut subscribers = shared.writers[n].lock().map_err(|_| "a writer failed")?;
    let cursor = shared.log.len.load(Ordering::Acquire);
    conn.write_all(&first).map_err(|e| e.to_string())?;
    subscribers.push(Subscriber { conn, cursor });
    Ok(())
}

/// Makes a publish durable in the journal; its frames, to send once it is answered.
fn commit(shared: &Shared, events: &[(&str, &RawValue)]) -> Result<Answer, String> {
    let mut frames = Vec::new();
    for (name, data) in events {
        let id = shared.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        frames.extend_from_slice(format!("id: {id}\nevent: {name}\ndata: ").as_bytes());
        frames.extend_from_slice(data.get().as_bytes());
        frames.extend_from_slice(b"\n\n");
    }
    shared
        .journal
        .lock()
        .map_err(|_| "the journal failed")?
        .append(&frames)?;
    Ok(("200 OK", "{}", Some(frames)))
}

/// Adds a publish's frames to the log and wakes the writers.
fn fan_out(shared: &Shared, frames: Vec<u8>) -> Result<(), String> {
    let mut publishes = shared.log.publishes.lock().map_err(|_| "the log failed")?;
    publishes.push(Arc::new(frames));
    shared.log.len.store(publishes.len(), Ordering::Release);
    shared.log.grew.notify_all();
    Ok(())
}
