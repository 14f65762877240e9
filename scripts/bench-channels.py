#!/usr/bin/env python3
"""How long `GET /channels` takes on the embedded store: starts a broker binary (argument 1,
default target/debug/broker) in open mode on a fresh database, stores N records (env N,
default 100000) over 100 channels and 10 event names per channel with `POST /publish`
batches of 1000, then times three `GET /channels`. Standard library only.
Example: cargo build --release && N=1000000 python3 scripts/bench-channels.py target/release/broker
"""
import json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
db = tempfile.mkdtemp()
p = subprocess.Popen(["target/debug/broker" if len(sys.argv) < 2 else sys.argv[1], "--host", "127.0.0.1", "--port", str(port), "--db", db, "--no-auth"], stderr=subprocess.DEVNULL)
base = f"http://127.0.0.1:{port}"
for _ in range(200):
    try:
        urllib.request.urlopen(base + "/health"); break
    except Exception: time.sleep(0.05)
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
N = int(os.environ.get("N", "100000"))
t = time.time()
for b in range(N // 1000):
    events = [{"channelName": f"c{(b*1000+i) % 100}", "type": f"e{i % 10}", "payload": "x"} for i in range(1000)]
    post("/publish", {"events": events})
print(f"inserted {N} records in {time.time()-t:.1f}s")
for _ in range(3):
    t = time.time()
    out = json.load(urllib.request.urlopen(base + "/channels"))
    print(f"GET /channels: {len(out['channels'])} channels, {sum(c['records'] for c in out['channels'])} records, {1000*(time.time()-t):.0f} ms")
p.terminate()
p.wait()
shutil.rmtree(db, ignore_errors=True)
