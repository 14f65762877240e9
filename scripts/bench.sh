#!/usr/bin/env bash
# Runs broker-bench suites against a release build of Broker on this machine and writes the
# results (JSON and Markdown) under bench-results/. Usage: scripts/bench.sh quick|full
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-quick}
cargo build --release -p broker -p broker-bench
out=bench-results/$suite
mkdir -p "$out"
db=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$db"' EXIT
target/release/broker --host 127.0.0.1 --port 18500 --db "$db" --max-streams 200000 2>"$out/broker.log" &
pid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18500/health >/dev/null && break; sleep 0.1; done

run() { # label, then broker-bench arguments
  local label=$1; shift
  echo "== $label"
  target/release/broker-bench --url http://127.0.0.1:18500 --server-pid $pid --label "$label" \
    --channel "bench-$label" --json "$out/$label.json" "$@" | tee "$out/$label.md"
}

if [ "$suite" = quick ]; then
  run light-load --subscribers 1000 --publishers 1 --rate 10 --duration 10 --source-addrs 4
  run fan-out --subscribers 2000 --publishers 4 --duration 10 --source-addrs 4
  run durable-inserts --subscribers 1 --publishers 64 --duration 10
  run snapshot --subscribers 1 --publishers 1 --duration 1 --snapshot-events 100000
  run node-sse-wire --profile node-sse --subscribers 1000 --publishers 4 --duration 10 --source-addrs 4
else
  run light-load --subscribers 1000 --publishers 1 --rate 10 --duration 30 --source-addrs 8
  run fan-out --subscribers 10000 --publishers 8 --duration 30 --source-addrs 16
  run durable-inserts --subscribers 1 --publishers 64 --duration 30
  run snapshot --subscribers 1 --publishers 1 --duration 1 --snapshot-events 100000
  run idle-19k --subscribers 19000 --publishers 1 --rate 1 --duration 5 --source-addrs 16
  run node-sse-wire --profile node-sse --subscribers 10000 --publishers 8 --duration 30 --source-addrs 16
fi
echo "results in $out/"
