#!/usr/bin/env python3
"""RSS per idle stream of one path: opens N idle streams (steps of 500) against BINARY in
open mode and prints the least-squares slope of the server's RSS. Usage:
scripts/idle-rss.py BINARY PATH N (for example PATH=/events or /.well-known/mercure?match=x)."""
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

binary, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = tempfile.mkdtemp()
proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", "0", "--db", db + "/db", "--no-auth",
                         "--max-streams-per-ip", "100000", "--max-connections-per-ip", "100000"],
                        stderr=subprocess.PIPE, text=True)
port = None
for line in proc.stderr:
    m = re.search(r"listening on http://[\d.]+:(\d+)", line)
    if m:
        port = int(m.group(1)); break
def rss():
    with open(f"/proc/{proc.pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024
def open_stream():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    assert b" 200 " in data.split(b"\r\n")[0], data[:200]
    return s
socks = [open_stream() for _ in range(100)]
time.sleep(1)
points = []
for step in range(1, n // 500 + 1):
    while len(socks) < 100 + step * 500:
        socks.append(open_stream())
    time.sleep(0.5)
    points.append((len(socks), rss()))
xs = [p[0] for p in points]; ys = [p[1] for p in points]
mx = sum(xs) / len(xs); my = sum(ys) / len(ys)
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
print(f"{path}: {len(socks)} idle streams, RSS {ys[-1] / 2**20:.1f} MiB, slope {slope:.0f} B per stream")
proc.terminate()
proc.wait()
shutil.rmtree(db, ignore_errors=True)
