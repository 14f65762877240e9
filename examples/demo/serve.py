#!/usr/bin/env python3
"""`make client`: serves the two-window demo page against a Broker running elsewhere.

By default that Broker is the seed example of `make`, on http://localhost:$PORT. The page talks
to it across origins (CORS), so its origin setting must allow this page (`*`, as the seed
example passes, allows any). Prints the URL to open, then serves until interrupted.

Environment:
  PORT         the Broker's port (default 8080)
  BROKER_URL   another Broker's base URL instead (e.g. https://broker.example:8443)
  CLIENT_PORT  this page server's port (default 3000; 0 picks a free one)
  CLIENT_HOST  the address it listens on (default 127.0.0.1)
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def port_from_env(name, default):
    """The port in environment variable `name`, or `default` when unset; exits on a bad one."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) > 65535:
        sys.exit(f"{name} must be a port number, not {value!r}")
    return int(value)


def main():
    broker_url = os.environ.get("BROKER_URL", "").strip().rstrip("/")
    if not broker_url:
        broker_url = f"http://localhost:{port_from_env('PORT', 8080)}"
    host = os.environ.get("CLIENT_HOST", "127.0.0.1")
    client_port = port_from_env("CLIENT_PORT", 3000)

    # Path -> (content type, body). The page and the JS client are the ones `broker --demo`
    # serves; config.json names the Broker instead of the page's own origin.
    files = {
        "/": ("text/html; charset=utf-8", ROOT / "examples/demo/index.html"),
        "/demo/broker-client.js": ("text/javascript; charset=utf-8", ROOT / "clients/js/src/index.js"),
        "/demo/sse.js": ("text/javascript; charset=utf-8", ROOT / "clients/js/src/sse.js"),
    }
    config = json.dumps({"url": broker_url}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/demo/config.json":
                self.reply(200, "application/json", config)
            elif path in files:
                kind, file = files[path]
                self.reply(200, kind, file.read_bytes())
            else:
                self.reply(404, "application/json", b'{"error":"no such page"}')

        def reply(self, status, kind, body):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    server = ThreadingHTTPServer((host, client_port), Handler)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    print(
        f"Broker demo: open http://{shown}:{server.server_address[1]}/ in two browser windows "
        f"(Broker at {broker_url})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
