//! broker-bench-floor: what the kernel alone costs per delivery on this machine.
//!
//! Opens N loopback TCP connections to itself, then, round after round, one thread (or
//! `--writers` threads, each with its share of the connections) writes a frame of B bytes to
//! every connection with a plain blocking `write()` (no runtime, no HTTP, no channel: the least
//! any server could do per subscriber) while async tasks read them the way broker-bench's
//! subscribers do. It reports the CPU per write and per read and the time
//! of a whole sweep, from the first write to the last frame read. Any SSE server on this
//! machine pays at least this per delivery that goes out in a write of its own, so the
//! figures bound what fan-out rate and latency are reachable (docs/BENCHMARKS.md).

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use broker_bench::system;
use clap::Parser;
use tokio::io::AsyncReadExt;

/// Measures the cost of loopback TCP writes and reads on this machine.
#[derive(Debug, Parser)]
#[command(name = "broker-bench-floor", version)]
struct Args {
    /// Connections.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Bytes per frame (one SSE event of broker-bench is about 150).
    #[arg(long, default_value_t = 150)]
    frame: usize,
    /// Sweeps over every connection.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Threads reading.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Threads writing, each to its own share of the connections (a server sweeping its
    /// subscribers on every core).
    #[arg(long, default_value_t = 1)]
    writers: usize,
}

/// CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    system::cpu_seconds_in("/proc/thread-self/stat").unwrap_or(0.0)
}

/// CPU seconds of the whole process.
fn process_cpu() -> f64 {
    system::cpu_seconds_in("/proc/self/stat").unwrap_or(0.0)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    system::raise_open_files();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let server = listener.local_addr().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.readers.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    // Connect every reader (from 127.0.0.2.. to spread ports) and accept its writer side.
    let frames_read = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let socket = socket_from(system::source_addr(16, i))?;
        let reader = runtime
            .block_on(socket.connect(server))
            .map_err(|e| format!("connection {i}: {e}"))?;
        let (writer, _) = listener.accept().map_err(|e| e.to_string())?;
        writer.set_nodelay(true).map_err(|e| e.to_string())?;
        writers.push(writer);
        let (count, frame) = (frames_read.clone(), args.frame);
        runtime.spawn(read_frames(reader, frame, count));
    }

    let frame = vec![b'x'; args.frame];
    let share = args.connections.div_ceil(args.writers.max(1)).max(1);
    let threads = args.connections.div_ceil(share);
    // Each round starts when every writer thread and this one have reached the barrier.
    let start = Barrier::new(threads + 1);
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut sweeps = Vec::with_capacity(args.rounds);
    let writer_cpu = std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .chunks_mut(share)
            .map(|part| {
                let (start, frame, rounds) = (&start, &frame, args.rounds);
                scope.spawn(move || {
                    let before = thread_cpu();
                    for _ in 0..rounds {
                        start.wait();
                        for w in part.iter_mut() {
                            write_frame(w, frame)?;
                        }
                    }
                    Ok::<f64, String>(thread_cpu() - before)
                })
            })
            .collect();
        for round in 1..=args.rounds {
            let sweep_start = Instant::now();
            start.wait();
            let goal = (round * args.connections) as u64;
            while frames_read.load(Ordering::Acquire) < goal {
                std::thread::sleep(Duration::from_micros(50));
            }
            sweeps.push(sweep_start.elapsed());
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a writer thread panicked".to_owned())?
            })
            .sum::<Result<f64, String>>()
    })?;
    let elapsed = started.elapsed();
    let reader_cpu = (process_cpu() - cpu_before - writer_cpu).max(0.0);
    let writes = (args.connections * args.rounds) as f64;
    sweeps.sort();
    let median = sweeps.get(sweeps.len() / 2).copied().unwrap_or_default();
    println!(
        "{} connections, {}-byte frames, {} rounds in {:.2} s\n\
         writer: {:.2} µs CPU per write ({} thread(s), blocking write())\n\
         readers: {:.2} µs CPU per frame read ({} thread(s), tokio)\n\
         sweep (first write to last frame read): median {:.2} ms, max {:.2} ms",
        args.connections,
        args.frame,
        args.rounds,
        elapsed.as_secs_f64(),
        writer_cpu / writes * 1e6,
        threads,
        reader_cpu / writes * 1e6,
        args.readers,
        median.as_secs_f64() * 1e3,
        sweeps.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

/// A socket bound to `source` (spreading connections over loopback addresses).
fn socket_from(source: Option<IpAddr>) -> Result<tokio::net::TcpSocket, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("cannot bind {ip}: {e}"))?;
    }
    Ok(socket)
}

fn write_frame(w: &mut TcpStream, frame: &[u8]) -> Result<(), String> {
    w.write_all(frame).map_err(|e| e.to_string())
}

/// Reads frames of `frame` bytes and counts each one completed.
async fn read_frames(mut reader: tokio::net::TcpStream, frame: usize, count: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 4096];
    let mut pending = 0;
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            return;
        }
        pending += n;
        let complete = pending / frame;
        pending %= frame;
        count.fetch_add(complete as u64, Ordering::Release);
    }
}
