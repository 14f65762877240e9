//! broker-bench-jetstream: raw JetStream publishes, the reference for Broker's durable inserts
//! in cluster mode.
//!
//! `--publishers` tasks each publish to a stream of `--replicas` replicas (created if missing,
//! file storage) and wait for JetStream's acknowledgement before the next publish: one publish
//! in flight per publisher, as each of broker-bench's HTTP publishers has one insert in flight.
//! With `--atomic-batch N` each publisher sends atomic batches of N messages instead, as Broker's
//! writer does. The payload is about the size of broker-bench's samples. It reports acknowledged publishes
//! per second and the publish latency, in Markdown and optionally JSON.

use std::sync::Arc;
use std::time::Duration;

use broker_bench::system;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::Instant;

/// Publishes to JetStream as fast as acknowledgements allow.
#[derive(Debug, Parser)]
#[command(name = "broker-bench-jetstream", version)]
struct Args {
    /// NATS server URLs, comma-separated.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Stream to publish to (created with subjects `<stream>.>` if missing).
    #[arg(long, default_value = "bench_raw")]
    stream: String,
    /// Replicas of the stream.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Concurrent publishers, each with one publish in flight.
    #[arg(long, default_value_t = 64)]
    publishers: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes of each message.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Publish atomic batches of this many messages (the way Broker's writer does, one batch in
    /// flight per publisher, waiting for the commit's ack) instead of single messages.
    #[arg(long)]
    atomic_batch: Option<usize>,
    /// A label for the report.
    #[arg(long, default_value = "jetstream-raw")]
    label: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let urls: Vec<String> = args.nats.split(',').map(str::to_owned).collect();
    let client = async_nats::connect(urls)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.nats))?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: args.stream.clone(),
        subjects: vec![format!("{}.>", args.stream)],
        num_replicas: args.replicas,
        storage: async_nats::jetstream::stream::StorageType::File,
        allow_atomic_publish: args.atomic_batch.is_some(),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create stream {}: {e}", args.stream))?;
    let payload = bytes::Bytes::from(vec![b'x'; args.payload]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    let batch = args.atomic_batch.filter(|&n| n > 0);
    for p in 0..args.publishers {
        let (js, payload, errors) = (js.clone(), payload.clone(), errors.clone());
        let subject = format!("{}.p{p}", args.stream);
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut batches = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let acked = match batch {
                    None => match js.publish(subject.clone(), payload.clone()).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    },
                    Some(size) => {
                        batches += 1;
                        let id = format!("p{p}-{batches}");
                        publish_batch(&js, &subject, &id, size, &payload).await
                    }
                };
                let count = batch.unwrap_or(1);
                if acked {
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = latency.record_n(us.max(1), count as u64);
                } else {
                    errors.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            latency
        }));
    }
    let mut latency = histogram();
    for task in tasks {
        let h = task.await.map_err(|e| e.to_string())?;
        latency.add(&h).map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let acked = latency.len();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let rate = acked as f64 / seconds;
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "| {} | |\n|---|---|\n| publishers, replicas, atomic batch | {}, {}, {} |\n| acknowledged publishes | {acked} ({rate:.0} /s, {errors} errors) |\n| publish latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        args.label,
        args.publishers,
        args.replicas,
        batch.map_or_else(|| "no".to_owned(), |n| format!("{n} messages")),
        ms(0.5),
        ms(0.99),
        latency.max() as f64 / 1000.0
    );
    if let Some(path) = &args.json {
        let results = json!({
            "label": args.label, "publishers": args.publishers, "replicas": args.replicas,
            "atomic_batch": batch,
            "acknowledged": acked, "errors": errors, "per_second": rate, "seconds": seconds,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": latency.max() as f64 / 1000.0,
            "tool_cpu_seconds": system::cpu_seconds(std::process::id()),
        });
        std::fs::write(path, results.to_string())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Publishes one atomic batch of `size` messages and waits for its commit's ack: the messages
/// before the last go out without a reply, the last one carries `Nats-Batch-Commit`.
async fn publish_batch(
    js: &async_nats::jetstream::Context,
    subject: &str,
    id: &str,
    size: usize,
    payload: &bytes::Bytes,
) -> bool {
    let client = js.client();
    for i in 1..=size {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Batch-Id", id);
        headers.insert("Nats-Batch-Sequence", i.to_string().as_str());
        if i < size {
            if client
                .publish_with_headers(subject.to_owned(), headers, payload.clone())
                .await
                .is_err()
            {
                return false;
            }
            continue;
        }
        headers.insert("Nats-Batch-Commit", "1");
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload.clone())
            .timeout(Some(Duration::from_secs(5)));
        return match client.send_request(subject.to_owned(), request).await {
            Ok(answer) => !String::from_utf8_lossy(&answer.payload).contains("\"error\""),
            Err(_) => false,
        };
    }
    false
}
